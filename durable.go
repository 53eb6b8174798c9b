package heapkv

import (
	"fmt"
	"time"
)

// Making writes durable. A synced write is durable when its group's log
// sync returns (commit.go). Everything else is made durable here: Sync,
// the background loop (about once a second for NoSync writes), the index's
// flush hook (index.go) and checkpoints all call syncDurable, which syncs
// the heap and then the log (invariant 1). vouchLocked goes one step
// further, so that the frees waiting on the log's proof can be reused.

// Sync makes every write committed so far durable, including those made
// with NoSync.
func (db *DB) Sync() error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.failed(); err != nil {
		return fmt.Errorf("heapkv: sync: %w", err)
	}
	db.commit.mu.Lock()
	defer db.commit.mu.Unlock()
	if err := db.vouchLocked(); err != nil {
		return fmt.Errorf("heapkv: sync: %w", db.fail(err))
	}
	db.releaseFreesLocked()
	return nil
}

// background syncs NoSync writes about once a second, releases deferred
// frees, and runs checkpoints when the log has grown.
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
			db.commit.mu.Lock()
			if err := db.vouchLocked(); err != nil {
				db.fail(err)
			}
			db.releaseFreesLocked()
			db.commit.mu.Unlock()
			if db.reserve.diskFull.Load() {
				db.makeReserve() // space may be back (or the ENOSPC was a mirror's)
			}
		case <-db.bg.kick:
			if db.failed() != nil {
				continue
			}
			if err := db.checkpoint(); err != nil {
				db.logger.Error("background checkpoint failed", "err", err)
			}
		}
	}
}

// vouchLocked makes every committed write durable and vouched for on disk
// (wal.Log.VouchedLSN), so that every deferred free that no reader holds
// can be reused now: after the sync, it appends a record of no ops, whose
// stamp vouches for everything before it, and syncs again.
// REQUIRES: db.commit.mu held (the record takes an LSN).
func (db *DB) vouchLocked() error {
	if err := db.syncDurable(); err != nil {
		return err
	}
	log := db.log.Load()
	if log.VouchedLSN() >= log.SyncedLSN() || db.commit.frees.bytes == 0 {
		return nil
	}
	db.durable.mu.Lock()
	defer db.durable.mu.Unlock()
	lsn, err := log.Append([][]byte{appendRecord(nil, nil)})
	if err == nil {
		err = log.Sync()
	}
	if err != nil {
		return fmt.Errorf("heapkv: write vouch record: %w", err)
	}
	db.applied.Store(lsn)
	return nil
}

// syncDurable makes every committed write durable: the heap first, then the
// log (invariant 1).
func (db *DB) syncDurable() error {
	log := db.log.Load()
	if log == nil {
		return nil
	}
	db.durable.mu.Lock()
	defer db.durable.mu.Unlock()
	if db.durable.unsynced == 0 {
		return nil // every appended record is already durable
	}
	if err := log.Sync(); err != nil { // syncs the heap first (wal.Options.BeforeSync)
		return fmt.Errorf("heapkv: sync heap and log: %w", err)
	}
	db.durable.unsynced = 0
	return nil
}
