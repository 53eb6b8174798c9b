package heapkv

import (
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// SetFS makes Open use fs for every file; tests pass crash-simulating and
// fault-injecting file systems.
func SetFS(o *Options, fs vfs.FS) { o.fs = fs }

// HeapWriteBacksStarted returns how many times a write started the heap's
// write-back ahead of a heap-first flush (mirror.Set.StartWriteBack).
func HeapWriteBacksStarted(db *DB) int64 { return db.heap.WriteBacksStarted() }

// MapAnyFS makes Open map the heap for reads through a file system set
// with SetFS whose files have descriptors (errorfs over vfs.Default): map
// reads bypass the file system; the pread fallback goes through it.
func MapAnyFS(o *Options) { o.mapAnyFS = true }

// SetMarkDelay sets how long the log must be idle before the syncer
// flushes its sync mark; a delay above markInterval also spaces the mark
// flushes under load (an hour: none while a test runs).
func SetMarkDelay(o *Options, d time.Duration) { o.markDelay = d }

// CrossCheckKeyFilter makes every write the key filter rules out look its
// key up too, failing if the index holds it (presence.go).
func CrossCheckKeyFilter(o *Options) { o.crossCheckPresence = true }

// CrossCheckEntryCache makes every Get served by the index-entry cache
// compare the cached entry with the index's, failing if they differ.
func CrossCheckEntryCache(o *Options) { o.crossCheckEntryCache = true }

// KeyFilterReady starts the key filter's scan of the index if no write
// has (as the first write would), and reports whether the scan is done
// and how many lookups the filter has answered.
func KeyFilterReady(db *DB) (bool, int64) {
	if err := db.enter(); err != nil {
		return false, db.presence.skipped.Load()
	}
	defer db.leave()
	db.scanPresenceOnce()
	return db.presence.ready.Load(), db.presence.skipped.Load()
}

// HeapExtents returns the extents (first block, blocks) of key's heap
// value, in order; none for an inline value.
func HeapExtents(db *DB, key []byte) ([][2]uint64, error) {
	var out [][2]uint64
	err := db.lookup(key, func(raw []byte) error {
		e, err := db.decodeEntry(key, raw)
		if err != nil || !e.isHeap {
			return err
		}
		for _, x := range e.ptr.extents {
			out = append(out, [2]uint64{x.Start, uint64(x.Len)})
		}
		return nil
	})
	return out, err
}

// SetCompactIterBytes makes Compact open its index iterator again after
// every n bytes moved, until restore is called.
func SetCompactIterBytes(n int64) (restore func()) {
	old := compactIterBytes
	compactIterBytes = n
	return func() { compactIterBytes = old }
}
