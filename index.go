package heapkv

import (
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// indexBloomBitsPerKey sizes the index tables' Bloom filters: 10 bits per
// key give about a 1% false-positive rate.
const indexBloomBitsPerKey = 10

// openIndex opens the Pebble index in the index/ subdirectory. Pebble's own
// WAL is off: our log is the redo record, and the flush hook keeps the index
// from ever running ahead of it (invariant 2).
func (db *DB) openIndex(create bool) error {
	cache := pebble.NewCache(db.opts.IndexCacheSize)
	defer cache.Unref()
	popts := &pebble.Options{
		FS:                          dirSyncFS{db.fs},
		Cache:                       cache,
		MemTableSize:                uint64(db.opts.IndexMemTableSize),
		DisableWAL:                  true,
		ErrorIfNotExists:            !create,
		ErrorIfExists:               create,
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      pebbleLogger{db.logger.With("component", "index")},
		MemTableStopWritesThreshold: 4,
		EventListener: &pebble.EventListener{
			FlushBegin: func(pebble.FlushInfo) { db.beforeIndexFlush() },
		},
	}
	// Every write looks up the key's old entry (to free its extents and
	// keep exact counters), and most lookups during a load are for keys that
	// do not exist yet: a Bloom filter per table lets such a Get skip a table
	// without reading its index and data blocks. L1+ inherit L0's policy.
	popts.Levels[0].FilterPolicy = bloom.FilterPolicy(indexBloomBitsPerKey)
	popts.EnsureDefaults()
	idx, err := openPebble(db.fs.PathJoin(db.dir, indexDirName), popts)
	if err != nil {
		if !create {
			return fmt.Errorf("%w: index: %w", ErrCorrupt, err)
		}
		return fmt.Errorf("heapkv: create index: %w", err)
	}
	db.index = idx
	return nil
}

// beforeIndexFlush runs on Pebble's flush goroutine, with Pebble's mutex
// held, before a memtable is written to a table: it makes the heap and the
// log durable through every record applied so far. It takes only appendMu,
// which is never held across an index call, so it cannot deadlock.
func (db *DB) beforeIndexFlush() {
	if err := db.syncDurable(); err != nil {
		// The table may now hold entries whose log records are not durable.
		// Fail the write path so nothing more is acknowledged; reopening
		// recovers from what is durable.
		db.logger.Error("sync before index flush failed", "err", err)
		db.fail(err)
	}
}

// fail records the first write-path failure; writes refuse after it.
func (db *DB) fail(err error) {
	if db.failure.CompareAndSwap(nil, &err) {
		db.logger.Error("write path failed; database refuses writes until reopened", "err", err)
	}
}

// failed returns the first write-path failure, or nil.
func (db *DB) failed() error {
	if p := db.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// pebbleLogger sends Pebble's log lines to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("heapkv: index: " + msg) // Pebble calls Fatalf only for its own broken invariants

}

// openPebble opens Pebble, turning a panic into an error: Pebble panics on
// some I/O failures during Open (a failed directory fsync while ratcheting
// its format), and a failed Open must come back to our caller as an error.
// Nothing of the half-opened index is used afterwards.
func openPebble(dir string, opts *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("index open failed: %v", r)
		}
	}()
	return pebble.Open(dir, opts)
}
