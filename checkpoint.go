package heapkv

import (
	"fmt"
	"strings"

	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/internal/vfsutil"
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
//  1. Under commit.mu (no group in flight): c = last applied LSN; sync the
//     heap and the log through c; start a new log file at c+1; copy the
//     allocation bitmaps, leaving out claims not yet logged and the frees
//     still deferred (they are free as of c).
//  2. Flush the index, so every entry through c is in a table.
//  3. Write alloc-<c> and install MANIFEST-<seq+1> (write, fsync, rename,
//     fsync directory).
//  4. Delete the previous MANIFEST, snapshot and the log files <= c.
func (db *DB) checkpoint() error {
	db.ckpt.mu.Lock()
	defer db.ckpt.mu.Unlock()
	log := db.log.Load()

	// Step 1.
	db.commit.mu.Lock()
	c := db.applied.Load()
	if err := db.syncDurable(); err != nil {
		db.commit.mu.Unlock()
		return db.fail(err)
	}
	if err := log.Rotate(); err != nil {
		db.commit.mu.Unlock()
		// A failed rotation poisons the log.
		return db.fail(fmt.Errorf("rotate log: %w", err))
	}
	snap := db.alloc.Snapshot()
	db.commit.frees.pending(snap.Clear)
	counters := db.commit.counters
	// The heap sync inside syncDurable (if it ran at all) ran before the
	// last group was applied. Sync again, with c applied, so every in-sync
	// replica holds c durably: one that goes stale later is stale at c or
	// after, which replay of the log after c covers. Then the tracking
	// state of replicas not in sync, with every mark of the writes through
	// c (replay re-marks later ones).
	if err := db.heap.Sync(); err != nil {
		db.commit.mu.Unlock()
		return db.fail(fmt.Errorf("sync heap: %w", err))
	}
	trk, err := db.heap.Capture()
	if err != nil {
		db.commit.mu.Unlock()
		return fmt.Errorf("capture replica tracking state: %w", err)
	}
	db.commit.sinceCkpt = 0
	db.releaseFreesLocked()
	db.commit.mu.Unlock()

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
	db.manifest.mu.Lock()
	m := manifest{
		checkpointLSN: c,
		blockSize:     uint32(db.geom.BlockSize),
		segmentBlocks: uint32(db.geom.SegmentBlocks),
		counters:      counters,
		tracking:      trk != nil,
	}
	m.replicas, m.meta = db.replicaTableLocked()
	if err := db.installManifestLocked(m); err != nil {
		db.manifest.mu.Unlock()
		return err
	}
	db.ckpt.lsn.Store(c)
	db.stats.checkpoints.Add(1)

	// Step 4. Failures here leave extra files behind, never lost data.
	// manifest.mu keeps replica-table updates (which install MANIFESTs
	// too) out until the listing is done.
	err = db.removeObsolete(db.manifest.last.seq, c, trk != nil)
	db.manifest.mu.Unlock()
	if err != nil {
		db.logger.Warn("removing obsolete files after checkpoint", "err", err)
	}
	if err := log.RemoveThrough(c); err != nil {
		db.logger.Warn("removing old log files after checkpoint", "err", err)
	}
	db.makeReserve()
	return nil
}

// removeObsolete deletes MANIFESTs older than seq, allocation snapshots and
// tracking states other than those for lsn, and leftover temporary files.
// REQUIRES: db.manifest.mu held.
func (db *DB) removeObsolete(seq uint64, lsn base.LSN, tracking bool) error {
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
	return vfsutil.SyncDir(db.fs, db.dir)
}
