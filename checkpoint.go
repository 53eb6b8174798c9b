package heapkv

import (
	"fmt"
	"strings"
	"time"

	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/wal"
)

// Checkpoint makes every committed write durable, flushes the index, writes
// an allocation snapshot and a new MANIFEST, and deletes the log files and
// older snapshots the new checkpoint makes unnecessary. Recovery replays
// only the log after the newest checkpoint. Checkpoints also run in the
// background (Options.CheckpointLogBytes) and on Close.
func (db *DB) Checkpoint() error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.failed(); err != nil {
		return fmt.Errorf("heapkv: checkpoint: %w", err)
	}
	if err := db.checkpoint(); err != nil {
		return fmt.Errorf("heapkv: checkpoint: %w", err)
	}
	return nil
}

// checkpoint runs the steps of DESIGN "Checkpoint and recovery":
//
//  1. Under commitMu (no group in flight): c = last applied LSN; sync the
//     heap and the log through c; start a new log file at c+1; copy the
//     allocation bitmaps, leaving out claims not yet logged and the frees
//     still deferred (they are free as of c).
//  2. Flush the index, so every entry through c is in a table.
//  3. Write alloc-<c> and install MANIFEST-<seq+1> (write, fsync, rename,
//     fsync directory).
//  4. Delete the previous MANIFEST, snapshot and the log files <= c.
func (db *DB) checkpoint() error {
	db.ckptMu.Lock()
	defer db.ckptMu.Unlock()
	log := db.log.Load()

	// Step 1.
	db.commitMu.Lock()
	c := db.appliedLSN
	if err := db.syncDurable(); err != nil {
		db.commitMu.Unlock()
		return db.fail(err)
	}
	if err := log.Rotate(); err != nil {
		db.commitMu.Unlock()
		// A failed rotation poisons the log.
		return db.fail(fmt.Errorf("rotate log: %w", err))
	}
	snap := db.alloc.Snapshot()
	db.frees.pending(snap.Clear)
	counters := db.counters
	// The heap sync inside syncDurable (if it ran at all) ran before the
	// last group was applied. Sync again, with c applied, so every in-sync
	// replica holds c durably: one that goes stale later is stale at c or
	// after, which replay of the log after c covers. Then the tracking
	// state of replicas not in sync, with every mark of the writes through
	// c (replay re-marks later ones).
	if err := db.heap.Sync(); err != nil {
		db.commitMu.Unlock()
		return db.fail(fmt.Errorf("sync heap: %w", err))
	}
	trk, err := db.heap.Capture()
	if err != nil {
		db.commitMu.Unlock()
		return fmt.Errorf("capture replica tracking state: %w", err)
	}
	db.sinceCkpt = 0
	db.releaseFreesLocked()
	db.commitMu.Unlock()

	// Step 2. Pebble retries a failed flush forever: the wait ends when the
	// index (or anything else) fails the database. Then the marker that
	// Open checks the index against (index.go).
	flushed, err := db.index.AsyncFlush()
	if err != nil {
		return db.fail(fmt.Errorf("flush index: %w", err))
	}
	if err := db.waitIndex(flushed); err != nil {
		return err
	}
	if err := db.writeIndexMarker(c, counters); err != nil {
		return db.fail(err)
	}

	// Step 3.
	body, err := snap.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode allocation snapshot: %w", err)
	}
	data := make([]byte, filehdr.Size, filehdr.Size+len(body))
	filehdr.Header{Kind: filehdr.KindAlloc, Version: filehdr.Version, DBID: db.id}.Encode(data)
	data = append(data, body...)
	if err := writeFileAtomic(db.fs, db.dir, allocFileName(c), data); err != nil {
		return diskError(fmt.Errorf("write allocation snapshot: %w", err))
	}
	if trk != nil {
		if err := writeFileAtomic(db.fs, db.dir, trackingFileName(c), trk); err != nil {
			return diskError(fmt.Errorf("write replica tracking state: %w", err))
		}
	}
	// The replica table is the current one, not the one at c: a replica
	// that went stale since holds every write through c (the heap sync of
	// step 1 reached it), and replay marks the later ones.
	db.repl.manifestMu.Lock()
	m := manifest{
		checkpointLSN: c,
		blockSize:     uint32(db.geom.BlockSize),
		segmentBlocks: uint32(db.geom.SegmentBlocks),
		counters:      counters,
		tracking:      trk != nil,
	}
	m.replicas, m.meta = db.replicaTableLocked()
	if err := db.installManifestLocked(m); err != nil {
		db.repl.manifestMu.Unlock()
		return err
	}
	db.ckptLSN.Store(c)
	db.stats.checkpoints.Add(1)

	// Step 4. Failures here leave extra files behind, never lost data.
	// manifestMu keeps replica-table updates (which install MANIFESTs
	// too) out until the listing is done.
	err = db.removeObsolete(db.repl.last.seq, c, trk != nil)
	db.repl.manifestMu.Unlock()
	if err != nil {
		db.logger.Warn("removing obsolete files after checkpoint", "err", err)
	}
	if err := log.RemoveThrough(wal.LSN(c)); err != nil {
		db.logger.Warn("removing old log files after checkpoint", "err", err)
	}
	db.makeReserve()
	return nil
}

// removeObsolete deletes MANIFESTs older than seq, allocation snapshots and
// tracking states other than those for lsn, and leftover temporary files.
// REQUIRES: repl.manifestMu.
func (db *DB) removeObsolete(seq, lsn uint64, tracking bool) error {
	names, err := db.fs.List(db.dir)
	if err != nil {
		return err
	}
	keepM, keepA, keepT := manifestFileName(seq), allocFileName(lsn), ""
	if tracking {
		keepT = trackingFileName(lsn)
	}
	removed := false
	for _, n := range names {
		obsolete := (strings.HasPrefix(n, manifestPrefix) && n != keepM) ||
			(strings.HasPrefix(n, allocPrefix) && n != keepA) ||
			(strings.HasPrefix(n, trackingPrefix) && n != keepT) ||
			strings.HasSuffix(n, ".tmp")
		if obsolete {
			if err := db.fs.Remove(db.fs.PathJoin(db.dir, n)); err != nil {
				return err
			}
			removed = true
		}
	}
	if !removed {
		return nil
	}
	// Not needed for correctness (the newest MANIFEST wins), but without it
	// a crash can bring removed files back until the next checkpoint.
	return syncDir(db.fs, db.dir)
}

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
	db.commitMu.Lock()
	defer db.commitMu.Unlock()
	if err := db.vouchLocked(); err != nil {
		return fmt.Errorf("heapkv: sync: %w", db.fail(err))
	}
	db.releaseFreesLocked()
	return nil
}

// background syncs NoSync writes about once a second, releases deferred
// frees, and runs checkpoints when the log has grown.
func (db *DB) background() {
	defer db.bg.Done()
	db.startAutoAttach()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-tick.C:
			if db.failed() != nil {
				continue
			}
			db.commitMu.Lock()
			if err := db.vouchLocked(); err != nil {
				db.fail(err)
			}
			db.releaseFreesLocked()
			db.commitMu.Unlock()
			if db.diskFull.Load() {
				db.makeReserve() // space may be back (or the ENOSPC was a mirror's)
			}
		case <-db.ckptKick:
			if db.failed() != nil {
				continue
			}
			if err := db.checkpoint(); err != nil {
				db.logger.Error("background checkpoint failed", "err", err)
			}
		}
	}
}
