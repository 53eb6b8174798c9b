package heapkv

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// How the database fails (fail-stop).
//
// An I/O error that leaves the log, the heap or the index in a state the
// database cannot vouch for, damage Pebble finds in the index, and an
// ENOSPC that reaches the log or the index all end the same way: the
// first such error is latched
// (failLatch), every later write returns an error wrapping ErrFailed and
// that first cause, reads of intact data go on, and Close returns promptly
// without the checkpoint it would otherwise write. Reopening recovers from
// what is durable: the index as of the last checkpoint plus the log.
//
// The index needs one more step. Pebble reports its own fatal conditions
// (a flush or compaction that cannot write its table, corruption found
// while reading, a broken invariant) through its logger's Fatalf and its
// EventListener. The first index failure raises a fence in the file system
// Pebble writes through (indexfence.go): from then on the index on disk
// stays exactly as the last MANIFEST edit before the fence left it, while
// Pebble goes on serving reads from what it holds. Pebble retries a failed
// flush or compaction at once and forever; its BackgroundError handler
// slows the retries of a fenced index to one per fencedRetryInterval, so a
// failed database does not spin a core while it waits to be closed.
//
// A full file system need not get that far: the database keeps a space
// reserve (reserve.go), and the first ENOSPC releases it and retries, so
// that the write, Close, the next Open, the deletes that follow and the
// checkpoint that returns their space have room to write.

// fencedRetryInterval is how often Pebble may retry a flush or compaction
// once the index is fenced.
const fencedRetryInterval = 200 * time.Millisecond

// failLatch holds the first failure of the database.
type failLatch struct {
	err  atomic.Pointer[error]
	once sync.Once
	ch   chan struct{} // closed when err is set; see done
}

// done returns a channel closed once the database has failed.
func (l *failLatch) done() <-chan struct{} { return l.channel() }

func (l *failLatch) channel() chan struct{} {
	l.once.Do(func() { l.ch = make(chan struct{}) })
	return l.ch
}

// fail records err as the database's failure if it is the first one, and
// returns the error a write refused because of it returns: ErrFailed
// wrapping the first cause. A cause that is an ENOSPC also wraps
// ErrDiskFull, and releases the space reserve.
func (db *DB) fail(err error) error {
	if err = diskError(err); errors.Is(err, ErrDiskFull) {
		db.releaseReserve()
	}
	if db.failure.err.CompareAndSwap(nil, &err) {
		close(db.failure.channel())
		db.logger.Error("database failed; it refuses writes until reopened", "err", err)
	}
	return db.failed()
}

// failed returns nil, or ErrFailed wrapping the database's first failure.
func (db *DB) failed() error {
	if p := db.failure.err.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *p)
	}
	return nil
}

// failIndex fails the database for an error Pebble reported as fatal and
// fences the index's files.
func (db *DB) failIndex(err error) {
	db.indexFence.Store(true)
	if pebble.IsCorruptionError(err) && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	db.fail(fmt.Errorf("heapkv: index: %w", err))
}

// indexError wraps an error of an index read, adding ErrCorrupt when Pebble
// found damage (pebble.IsCorruptionError: Pebble marks corruption with
// cockroachdb/errors, which the standard errors.Is does not see).
func indexError(what string, err error) error {
	if pebble.IsCorruptionError(err) && !errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%w: index: %s: %w", ErrCorrupt, what, err)
	}
	return fmt.Errorf("heapkv: index: %s: %w", what, err)
}

// indexEventListener puts the database into the failed state on Pebble's
// fatal events instead of Pebble's default, which calls Logger.Fatalf.
func (db *DB) indexEventListener() *pebble.EventListener {
	return &pebble.EventListener{
		FlushBegin: func(pebble.FlushInfo) { db.beforeIndexFlush() },
		BackgroundError: func(err error) {
			if db.indexFence.Load() {
				if db.indexAbandoned.Load() {
					// Nobody will close this index (openPebble gave up
					// on it): park its retrying goroutine for good.
					var never chan struct{}
					<-never
				}
				// Pebble calls this with its mutex held and retries at
				// once; a fenced index cannot succeed, so slow it down.
				time.Sleep(fencedRetryInterval)
				return
			}
			db.failIndex(err)
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			db.failIndex(fmt.Errorf("%w: %s: %w", ErrCorrupt, info.Path, info.Details))
		},
	}
}

// waitIndex waits for ch (a Pebble completion channel) or for the database
// to fail, whichever comes first. An operation that completed behind the
// fence (indexfence.go) did not reach the disk, so completion is checked
// against the latch too.
func (db *DB) waitIndex(ch <-chan struct{}) error {
	select {
	case <-ch:
	case <-db.failure.done():
	}
	return db.failed()
}
