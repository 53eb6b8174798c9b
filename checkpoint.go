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
	if err := db.errIfReadOnly("checkpoint"); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.failed(); err != nil {
		return fmt.Errorf("heapkv: checkpoint: %w", err)
	}
	if err := db.checkpoint(false); err != nil {
		return fmt.Errorf("heapkv: checkpoint: %w", err)
	}
	return nil
}

// checkpoint runs the steps of DESIGN "Checkpoint and recovery":
//
//  1. Under commit.mu (no group is built) drain the pipeline, so every
//     group appended is durable and applied, and c = the last applied LSN;
//     start a new log file at c+1 (but see below). Under applier.mu,
//     copy the allocation bitmaps, leaving out claims not yet logged and
//     the frees still deferred (they are free as of c), and flush the
//     heap: the values that log records through c carry are durable in
//     the heap from now on (invariant 1), so the log through c may go.
//  2. Flush the index, so every entry through c is in a table.
//  3. Write alloc-<c> and install MANIFEST-<seq+1> (write, fsync, rename,
//     fsync directory).
//  4. Delete the previous MANIFEST, snapshot and the log files <= c.
//
// A background checkpoint starts the new log file only if a spare is
// ready (wal.Log.RotateIfSpare): preparing one means zero-filling a
// segment and waiting for it under commit.mu, which held every writer for
// 20-57 ms (ARCHITECTURE.md, refinement 48). Without the rotation the
// segment holding c+1 stays until a later checkpoint passes its end.
// Explicit checkpoints, Close's and recovery's always rotate, so a closed
// log ends in an empty segment.
func (db *DB) checkpoint(background bool) error {
	db.ckpt.mu.Lock()
	defer db.ckpt.mu.Unlock()
	log := db.log.Load()

	// Step 1. Flush the heap once before taking any lock, so that the
	// flush under the locks below (which holds up the commit leader)
	// writes back only what arrived meanwhile; written back a batch of
	// about 256 KiB at a time first, so the log's flushes meanwhile do not
	// queue behind the whole of it (mirror/writeback.go).
	db.heap.WriteBack()
	if err := db.heap.Sync(); err != nil {
		return db.fail(fmt.Errorf("sync heap: %w", err))
	}
	db.commit.mu.Lock()
	if err := db.flushPending(); err != nil {
		db.commit.mu.Unlock()
		return err
	}
	c := db.applied.Load()
	var err error
	if background {
		_, err = log.RotateIfSpare()
	} else {
		err = log.Rotate()
	}
	if err != nil {
		db.commit.mu.Unlock()
		// A failed rotation poisons the log.
		return db.fail(fmt.Errorf("rotate log: %w", err))
	}
	db.applier.mu.Lock()
	snap := db.alloc.Snapshot()
	db.applier.frees.pending(snap.Clear)
	counters := db.applier.counters
	// Flush the heap with c applied, so every in-sync replica holds c
	// durably (carried values included): one that goes stale later is
	// stale at c or after, which replay of the log after c covers. Then
	// the tracking state of replicas not in sync, with every mark of the
	// writes through c (replay re-marks later ones).
	dirty := db.durable.heapDirty.Load()
	err = db.heap.Sync()
	if err == nil {
		db.durable.noteHeapSynced(max(dirty, c))
	}
	var trk []byte
	if err == nil {
		trk, err = db.heap.Capture()
		if err != nil {
			err = fmt.Errorf("capture replica tracking state: %w", err)
		}
	} else {
		err = db.fail(fmt.Errorf("sync heap: %w", err))
	}
	if err == nil {
		db.applier.sinceCkpt, db.applier.sinceCkptCarried = 0, 0
		db.releaseFreesLocked()
	}
	db.applier.mu.Unlock()
	db.commit.mu.Unlock()
	if err != nil {
		return err
	}

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
// tracking states other than those for lsn, saved key filters, and
// leftover temporary files.
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
			strings.HasPrefix(n, keysPrefix) || // describes an older index (presencefile.go)
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
