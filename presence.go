package heapkv

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/internal/keyfilter"
)

// Which keys the index may hold (issue 14, item 2).
//
// Every write looks up what its key held before (indexState), to free the
// heap extents it replaces and keep the counters exact. For a key the index
// has never held, as in a load of new keys, that lookup is a Pebble Get
// that misses: memtables, then a Bloom filter probe per table, the more L0
// tables the dearer. The presence filter (internal/keyfilter) answers most
// of those misses from memory: it holds every key written since Open plus
// every key the index held at Open, so "no" means the key is absent, and
// the write takes keyAbsent as its prior state without the lookup. The
// counters stay exact, since a "no" is never wrong. "Maybe" (a key that is
// or was present, or a false positive, about 0.1% per generation of the
// filter) looks up as before.
//
// The filter exists from Open on and every group the leader builds adds
// the keys of its Puts to keys that held nothing (buildGroup, under
// commit.mu, before the group reaches the index), so it holds every key
// written since Open: a Put to a key that holds something needs no Add,
// since the key got there through an earlier Put (which added it, or
// which the scan below finds). A background scan,
// started by the first write (a database opened only to be read never
// runs it), then adds every key of the index as it is when the scan
// starts; only once the scan is done does the filter answer "no"
// (ready). An Open at the checkpoint a Close saved the filter at loads
// it instead, ready at once (presencefile.go). A key the
// index holds at any moment after that was either there when the scan
// began or written since Open. Keys are never removed: a deleted key stays
// "maybe" until an Open rebuilds the filter (one that loads a saved
// filter keeps it "maybe"; savePresence bounds how many such keys a saved
// filter may carry).
//
// A writer asks outside commit.mu (prefetchPrior), and the filter sees
// every Add that returned before it asks: a group that writes the key
// after the answer is in recentWrites when the writer's own group is built
// (the write pin of its prefetch keeps it there), exactly as for a Get.
//
// Options.crossCheckPresence (tests) looks up the keys the filter rules
// out as well, and fails the write if the index holds one.
type presence struct {
	filter  *keyfilter.Filter
	loaded  bool         // the filter came from keys-<c> (presencefile.go); set before any write
	scan    sync.Once    // starts the scan (scanPresenceOnce)
	ready   atomic.Bool  // the scan of the index is done, or the filter was loaded
	scanned atomic.Bool  // the scan is done: the entry cache is warm (tests wait for it)
	skipped atomic.Int64 // lookups the filter answered
}

// absent reports whether key is certainly not in the index.
func (p *presence) absent(key []byte) bool {
	return p.ready.Load() && !p.filter.MayContain(key)
}

// startPresence makes the filter, which from now on takes every Put's
// key: the one Close saved, ready at once, if Open may use it
// (loadPresence), else an empty one that the scan fills. REQUIRES: no
// write has been committed since recovery.
func (db *DB) startPresence() {
	if f := db.loadPresence(); f != nil {
		db.presence.filter, db.presence.loaded = f, true
		db.presence.ready.Store(true)
		return
	}
	db.presence.filter = keyfilter.New()
}

// scanPresenceOnce starts, on the first write after Open, the scan that
// fills the filter with the index's keys: a database opened to be read
// never pays for reading every key. REQUIRES: the caller holds db.enter,
// so Close waits for the scan it starts (bg.wg).
func (db *DB) scanPresenceOnce() {
	db.presence.scan.Do(func() {
		db.bg.wg.Add(1)
		go func() {
			defer db.bg.wg.Done()
			n, err := db.scanPresence()
			switch {
			case err != nil && db.presence.loaded:
				db.logger.Warn("warming the index-entry cache failed", "err", err)
			case err != nil:
				// The filter stays not ready: every write looks up, as before.
				db.logger.Warn("key filter not built; every write looks up its key", "err", err)
			case n >= 0:
				db.presence.ready.Store(true)
				db.presence.scanned.Store(true)
				db.logger.Debug("key filter built", "keys", n, "bytes", db.presence.filter.Bytes())
			}
		}()
	})
}

// scanPresence adds every point key of the index to the filter and warms
// the index-entry cache with their entries (entrycache.go, warmer); with a
// loaded filter (presencefile.go) it only warms, and stops when the cache
// is full. It returns -1 if Close began first.
//
// While the cache has room, the scan reads warmBatch keys per iterator
// and then makes a new one, positioned at the next key to read, under
// fresh tokens. A key that the new iterator no longer sees was deleted
// meanwhile, which the filter allows: it must hold every key the index
// holds, and a key put again after its delete is added by that Put.
func (db *DB) scanPresence() (int64, error) {
	w := db.ecache.newWarmer()
	open := func() (*pebble.Iterator, error) {
		if !w.done() {
			w.renew()
		}
		it, err := db.index.NewIter(&pebble.IterOptions{KeyTypes: pebble.IterKeyTypePointsOnly})
		if err != nil {
			return nil, indexError("scan keys for the key filter", err)
		}
		return it, nil
	}
	it, err := open()
	if err != nil {
		return 0, err
	}
	var n int64
	var next []byte
	for ok := it.First(); ok; ok = it.Next() {
		if n%warmBatch == 0 && n > 0 {
			select {
			case <-db.bg.stop:
				return -1, it.Close()
			default:
			}
			if !w.done() {
				next = append(next[:0], it.Key()...)
				if err := it.Close(); err != nil {
					return 0, indexError("scan keys for the key filter", err)
				}
				if it, err = open(); err != nil {
					return 0, err
				}
				if ok = it.SeekGE(next); !ok {
					break
				}
			}
		}
		if !db.presence.loaded {
			db.presence.filter.Add(it.Key())
		} else if w.done() {
			break // a loaded filter needs no keys: the scan only warmed the cache
		}
		if !w.done() {
			if v, err := it.ValueAndErr(); err == nil {
				w.fill(it.Key(), v)
			}
		}
		n++
	}
	if err := it.Close(); err != nil {
		return 0, indexError("scan keys for the key filter", err)
	}
	return n, nil
}

// warmBatch is how many keys the presence scan reads through one iterator
// while it warms the entry cache: a write to a shard after the iterator
// was made stops that shard's warming until the next one.
var warmBatch int64 = 1024

// errPresenceMiss is what a cross-checked write returns when the filter
// ruled out a key the index holds (a bug: the filter must never do that).
var errPresenceMiss = fmt.Errorf("heapkv: internal error: the key filter ruled out a key the index holds")
