package heapkv

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/wal"
)

// Making writes durable (invariant 1: a durable record's heap bytes are
// durable, or the record carries them).
//
// A group that must be durable carries its small heap values in its log
// records (groupCarries), so one flush of the log makes it durable; the heap
// blocks those values were also written to are flushed later, by the
// checkpoint that runs before the log segments carrying them are removed
// (checkpoint.go), and recovery writes them again from the log (recover.go).
// A record that points at heap bytes it does not carry (a large value, or
// any value of a NoSync write) needs the heap flushed before the log:
// appendGroup raises durable.heapDirty to its LSN before appending it, and
// every log flush that covers it (syncThrough, the log's own rotation:
// beforeLogSync) flushes the heap first.
//
// syncThrough is the one way records become durable on purpose: the
// pipeline's syncer, Sync, checkpoints and the index's flush hook all call
// it. It claims only the records it was asked for (wal.Log.SyncTo): a
// record appended while it flushes may reach the disk, but is not counted
// durable until a later flush whose heap flush covers it. Records of
// NoSync groups still in the log's buffer (appendGroup) are written by
// SyncTo before it flushes, if the target covers them, so a flush never
// claims a record that is only in memory.

// durableState orders flushes (DB.durable).
type durableState struct {
	// mu serialises syncThrough: one flush of heap and log at a time.
	mu sync.Mutex
	// heapDirty is the last LSN of a group with heap bytes it does not
	// carry; heapSynced the highest heapDirty a heap flush covered.
	heapDirty  base.AtomicLSN
	heapSynced base.AtomicLSN
	// unsynced counts log and heap bytes appended and not yet covered by
	// a flush, for NoSyncFlushBytes (approximate: a flush subtracts what
	// was counted when it started, so the bytes appended while it ran
	// stay counted even where it covered them).
	unsynced atomic.Int64
}

// syncThrough makes every record through target durable, flushing the heap
// first if some record through target points at heap bytes it does not
// carry.
func (db *DB) syncThrough(target base.LSN) error {
	log := db.log.Load()
	if log == nil {
		return nil
	}
	d := &db.durable
	d.mu.Lock()
	defer d.mu.Unlock()
	if target <= log.SyncedLSN() {
		return nil
	}
	// The flush covers at least the bytes counted so far (the count is
	// taken after the records through target were appended).
	covered := d.unsynced.Load()
	defer db.stats.syncLatency.Since(time.Now())
	if err := db.syncHeapIfDirty(); err != nil {
		return err
	}
	if err := syncLogTo(log, target); err != nil {
		return fmt.Errorf("heapkv: sync log: %w", err)
	}
	d.unsynced.Add(-covered)
	return nil
}

// syncHeapIfDirty flushes the heap if a record appended so far points at
// heap bytes it does not carry and no heap flush has covered it.
func (db *DB) syncHeapIfDirty() error {
	d := &db.durable
	dirty := d.heapDirty.Load()
	if dirty <= d.heapSynced.Load() {
		return nil
	}
	if err := db.heap.Sync(); err != nil {
		return fmt.Errorf("heapkv: sync heap: %w", err)
	}
	d.noteHeapSynced(dirty)
	return nil
}

// noteHeapSynced records that a heap flush covered every record through lsn.
func (d *durableState) noteHeapSynced(lsn base.LSN) {
	for {
		cur := d.heapSynced.Load()
		if lsn <= cur || d.heapSynced.CompareAndSwap(cur, lsn) {
			return
		}
	}
}

// beforeLogSync is the log's BeforeSync hook, run before every flush that
// makes records durable, including the one a rotation does on its own.
func (db *DB) beforeLogSync() error { return db.syncHeapIfDirty() }

// syncApplied makes every record applied to the index durable; the
// index's flush hook calls it (index.go), so the index never holds an entry
// whose record is not durable (invariant 2).
func (db *DB) syncApplied() error {
	return db.syncThrough(db.applied.Load())
}

// Sync makes every write committed so far durable, including those made
// with NoSync.
func (db *DB) Sync() error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if db.opts.ReadOnly {
		return nil // nothing was written
	}
	if err := db.failed(); err != nil {
		return fmt.Errorf("heapkv: sync: %w", err)
	}
	if err := db.vouch(); err != nil {
		return fmt.Errorf("heapkv: sync: %w", err)
	}
	return nil
}

// vouch makes every committed write durable and vouched for on disk
// (wal.Log.VouchedLSN), so that every deferred free that no reader holds
// can be reused now: after the flush, if frees wait, it commits a record
// of no ops whose stamp vouches for everything before it, and flushes it.
// The record goes in as an unsynced group, which the pipeline applies at
// once (it changes nothing in the index), and vouch waits for its flush
// itself: as a durable group it would hold every group appended after it
// until the flush, stalling all writers once a second under overwrites.
func (db *DB) vouch() error {
	if err := db.flushPending(); err != nil {
		return err
	}
	log := db.log.Load()
	db.applier.mu.Lock()
	waiting := db.applier.frees.bytes
	db.applier.mu.Unlock()
	if log.VouchedLSN() < log.SyncedLSN() && waiting > 0 {
		if err := db.commitRequest(&commitReq{}); err != nil {
			return fmt.Errorf("heapkv: write vouch record: %w", err)
		}
		if err := db.flushPending(); err != nil {
			return fmt.Errorf("heapkv: flush vouch record: %w", err)
		}
	}
	db.applier.mu.Lock()
	db.releaseFreesLocked()
	db.applier.mu.Unlock()
	// The newest records are protected by the sync mark only (see
	// markInterval): bring it up to date.
	if err := syncLogMark(log); err != nil {
		return db.fail(fmt.Errorf("heapkv: update the log's sync mark: %w", err))
	}
	return nil
}

// background makes NoSync writes durable about once a second, releases
// deferred frees, retries the space reserve on a full disk, and runs
// checkpoints when the log has grown.
func (db *DB) background() {
	defer db.bg.wg.Done()
	db.startAutoAttach()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-db.bg.stop:
			return
		case <-tick.C:
			if db.failed() != nil {
				continue
			}
			if err := db.vouch(); err != nil {
				db.logger.Error("background sync failed", "err", err)
			}
			if db.reserve.diskFull.Load() {
				db.makeReserve() // space may be back (or the ENOSPC was a mirror's)
			}
		case <-db.bg.kick:
			// Groups applied while the last checkpoint ran kicked again
			// before it reset the count; that checkpoint covered them.
			if db.failed() != nil || !db.checkpointDue() {
				continue
			}
			if err := db.checkpoint(true); err != nil {
				db.logger.Error("background checkpoint failed", "err", err)
			}
		}
	}
}

// checkpointDue is checkpointDueLocked for a caller without applier.mu.
func (db *DB) checkpointDue() bool {
	db.applier.mu.Lock()
	defer db.applier.mu.Unlock()
	return db.checkpointDueLocked()
}

// syncLogTo and syncLogMark are the log calls of the one-flush design.
func syncLogTo(log *wal.Log, target base.LSN) error { return log.SyncTo(target) }

func syncLogMark(log *wal.Log) error { return log.SyncMark() }
