package heapkv

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/internal/vfsutil"
	"github.com/heapkv/heapkv/mirror"
	"github.com/heapkv/heapkv/wal"
)

// replayBatchOps bounds how many ops recovery buffers in one index batch.
const replayBatchOps = 4096

// recover opens an existing database or creates a new one.
func (db *DB) recover() error {
	seqs, err := listManifests(db.fs, db.dir)
	if err != nil {
		return err
	}
	if len(seqs) == 0 {
		return db.create()
	}
	m, err := db.openLast(seqs[len(seqs)-1])
	if err != nil {
		return err
	}
	// Check the log's framing before the index is opened: Pebble's Open
	// rewrites its MANIFEST, OPTIONS and marker files, and a database whose
	// log is damaged or foreign must be left exactly as it was found.
	if _, err := wal.Replay(db.walOptions(), m.checkpointLSN, func(base.LSN, []byte) error { return nil }); err != nil {
		return fmt.Errorf("heapkv: check log: %w", err)
	}
	if err := db.makeMirrorDirs(); err != nil {
		return err
	}
	if err := db.openIndex(false, &m); err != nil {
		return err
	}
	// Records found in the log may not have been synced before the crash
	// (the OS kept them); make them and their heap blocks durable before the
	// index can flush anything replayed from them. The heap's Sync also
	// records replica state changes found while opening; persistReplicas
	// records mirrors new to the database.
	if err := db.heap.Sync(); err != nil {
		return fmt.Errorf("heapkv: sync heap: %w", err)
	}
	if err := db.persistReplicas(); err != nil {
		return err
	}
	if err := wal.SyncAll(db.walOptions()); err != nil {
		return fmt.Errorf("heapkv: sync log: %w", err)
	}
	last, err := db.replay(m.checkpointLSN)
	if err != nil {
		return err
	}
	log, err := wal.Open(db.walOptions(), last+1)
	if err != nil {
		return fmt.Errorf("heapkv: open log: %w", err)
	}
	db.log.Store(log)
	db.applied.Store(last)
	db.pipe.appended = last
	db.notePunched()
	if last > m.checkpointLSN {
		db.logger.Info("recovered from log", "checkpoint", m.checkpointLSN, "last", last)
		if err := db.checkpoint(false); err != nil {
			return fmt.Errorf("heapkv: checkpoint after recovery: %w", err)
		}
	}
	return nil
}

// openLast opens what MANIFEST seq, the last one, describes: the heap
// replicas and the allocation state of its checkpoint.
func (db *DB) openLast(seq uint64) (manifest, error) {
	m, name, err := db.loadManifest(seq)
	if err != nil {
		return m, err
	}
	if err := db.openHeap(m, name); err != nil {
		return m, err
	}
	return m, db.loadAllocSnapshot(m.checkpointLSN)
}

// loadManifest reads MANIFEST seq and takes the database's identity,
// geometry, counters and checkpoint LSN from it.
func (db *DB) loadManifest(seq uint64) (manifest, string, error) {
	name := manifestFileName(seq)
	b, err := readFile(db.fs, db.fs.PathJoin(db.dir, name), maxManifestSize)
	if err != nil {
		return manifest{}, name, fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	m, id, err := decodeManifest(b, filehdr.DBID{})
	if err != nil {
		return manifest{}, name, fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	db.id = id
	db.manifest.last = m
	db.applier.counters = m.counters
	db.geom = m.geometry()
	db.ckpt.lsn.Store(m.checkpointLSN)
	return m, name, nil
}

// replay redoes every log record after the checkpoint: allocation, frees,
// counters and index entries, in LSN order. Applying records in order is
// idempotent over any index state between the checkpoint and the end of
// the durable log (invariant 2), so no record needs to be skipped.
//
// Records past the last one the log proves was synced (wal.ProvenDurable)
// were never acknowledged as durable, and the operating system may have
// written them without the heap blocks they point at. Their values are read
// back and verified first (a value the record carries needs no check); the
// first record whose value is not intact ends the log there, as a torn
// tail.
//
// A value a record carries may never have reached its heap blocks: the
// heap is flushed for them only by the next checkpoint. Once the log's end
// is known, replay writes every carried value that is still live (no later
// record freed its blocks) to its blocks, on every writable heap replica,
// marking the tracking bitmaps of the others as a live write does
// (redoCarried). Values freed later are skipped: their blocks may hold a
// newer value by now.
func (db *DB) replay(after base.LSN) (base.LSN, error) {
	proven, err := wal.ProvenDurable(db.walOptions())
	if err != nil {
		return 0, fmt.Errorf("heapkv: scan log: %w", err)
	}
	batch := db.index.NewBatch()
	defer func() { batch.Close() }()
	flush := func() error {
		if batch.Empty() {
			return nil
		}
		if err := batch.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("heapkv: replay into index: %w", err)
		}
		batch.Close()
		batch = db.index.NewBatch()
		return nil
	}
	carried := make(map[uint64]carriedValue) // by the value's first block
	last, err := wal.Replay(db.walOptions(), after, func(lsn base.LSN, payload []byte) error {
		ops, err := decodeRecord(payload)
		if err != nil {
			return fmt.Errorf("%w: log record %d: %w", ErrCorrupt, lsn, err)
		}
		if lsn > proven {
			if err := db.verifyRecordValues(lsn, ops); err != nil {
				return fmt.Errorf("%w: %w", wal.ErrStop, err)
			}
		}
		for i := range ops {
			if err := db.redoOp(lsn, &ops[i], batch, carried); err != nil {
				return err
			}
		}
		if batch.Count() >= replayBatchOps {
			return flush()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("heapkv: replay log: %w", err)
	}
	if err := db.redoCarried(carried); err != nil {
		return 0, err
	}
	return last, flush()
}

// carriedValue is a value a replayed record carries, to be written to its
// heap blocks once the log's end is known.
type carriedValue struct {
	lsn    base.LSN
	key    []byte
	ptr    pointer
	stored []byte
}

// redoCarried writes the live carried values to the heap, in LSN order.
func (db *DB) redoCarried(carried map[uint64]carriedValue) error {
	vs := slices.SortedFunc(maps.Values(carried), func(a, b carriedValue) int { return cmp.Compare(a.lsn, b.lsn) })
	for _, v := range vs {
		if uint64(len(v.stored)) != v.ptr.storedLen || crcOf(v.stored) != v.ptr.crc {
			return fmt.Errorf("%w: log record %d carries %d bytes for key %q, whose pointer names %d bytes with checksum %08x",
				ErrCorrupt, v.lsn, len(v.stored), v.key, v.ptr.storedLen, v.ptr.crc)
		}
		if err := db.writeStored(v.stored, v.ptr.extents); err != nil {
			return fmt.Errorf("heapkv: write the value log record %d carries for key %q: %w", v.lsn, v.key, diskError(err))
		}
	}
	return nil
}

// verifyRecordValues reads back every heap value a record writes, on every
// in-sync replica (one may have the blocks and another not; a bad copy is
// repaired from a good one).
func (db *DB) verifyRecordValues(lsn base.LSN, ops []logOp) error {
	for i := range ops {
		if ops[i].kind != opPut {
			continue
		}
		e, err := db.decodeEntry(ops[i].key, ops[i].entry)
		if err != nil {
			return fmt.Errorf("log record %d: %w", lsn, err)
		}
		if e.isHeap && len(ops[i].carried) == 0 {
			if err := db.verifyValue(ops[i].key, &e.ptr); err != nil {
				return fmt.Errorf("unsynced log record %d: %w", lsn, err)
			}
		}
	}
	return nil
}

// redoOp redoes one op of record lsn: frees, allocation, counters and the
// index entry; a value the op carries joins carried.
func (db *DB) redoOp(lsn base.LSN, op *logOp, batch *pebble.Batch, carried map[uint64]carriedValue) error {
	for _, e := range op.freed {
		if err := db.alloc.MarkFree(e); err != nil {
			return fmt.Errorf("%w: log record %d frees %v of key %q: %w", ErrCorrupt, lsn, e, op.key, err)
		}
		delete(carried, e.Start)
	}
	db.applier.counters.remove(keyState{kind: op.oldKind, raw: op.oldRaw, stored: op.oldStored})
	if op.kind == opDelete {
		return batch.Delete(op.key, nil)
	}
	e, err := db.decodeEntry(op.key, op.entry)
	if err != nil {
		return fmt.Errorf("log record %d: %w", lsn, err)
	}
	if e.isHeap {
		for _, x := range e.ptr.extents {
			if err := db.alloc.MarkAllocated(x); err != nil {
				return fmt.Errorf("%w: log record %d allocates %v for key %q: %w", ErrCorrupt, lsn, x, op.key, err)
			}
			// Replicas not in sync missed this write (or may have):
			// re-mark it in their tracking bitmaps.
			db.heap.MarkWritten(x.Start, int(x.Len))
		}
		if len(op.carried) > 0 {
			carried[e.ptr.extents[0].Start] = carriedValue{lsn: lsn, key: bytes.Clone(op.key), ptr: e.ptr, stored: bytes.Clone(op.carried)}
		}
	}
	db.applier.counters.add(e.state())
	return batch.Set(op.key, op.entry, nil)
}

// create makes a new, empty database in db.dir.
func (db *DB) create() error {
	names, err := db.fs.List(db.dir)
	if err != nil {
		return fmt.Errorf("heapkv: list %s: %w", db.dir, err)
	}
	// Mirror directories inside the database directory are the mirrors'
	// business (removeHalfCreatedMirrors, newMirrorPaths).
	names = slices.DeleteFunc(names, db.isMirrorDir)
	if slices.Contains(names, creatingFileName) {
		db.logger.Warn("removing a database whose creation was interrupted")
		if err := db.removeHalfCreatedMirrors(); err != nil {
			return err
		}
		for _, n := range names {
			if n != lockFileName {
				if err := db.fs.RemoveAll(db.fs.PathJoin(db.dir, n)); err != nil {
					return fmt.Errorf("heapkv: remove half-created %s: %w", n, err)
				}
			}
		}
	} else if other := slices.DeleteFunc(names, func(n string) bool {
		// A crash while the marker itself was being written leaves only
		// its temporary file.
		return n == lockFileName || n == creatingFileName+".tmp"
	}); len(other) > 0 {
		return fmt.Errorf("%w: %s has no MANIFEST but holds %s", ErrCorrupt, db.dir, strings.Join(other, ", "))
	}
	paths, err := db.newMirrorPaths()
	if err != nil {
		return err
	}
	if _, err := rand.Read(db.id[:]); err != nil {
		return fmt.Errorf("heapkv: database id: %w", err)
	}
	// The marker holds the new database's ID, so that a retry can tell
	// the mirror files this attempt made from anyone else's. It is written
	// from a copy: a vfs.FS may scribble over a buffer it was given (Pebble's
	// MemFS does in invariants builds, as under -race), and db.id must stay.
	if err := writeFileAtomic(db.fs, db.dir, creatingFileName, slices.Clone(db.id[:])); err != nil {
		return fmt.Errorf("heapkv: create %s: %w", db.dir, err)
	}
	db.geom = db.opts.geometry()
	if db.alloc, err = alloc.New(db.geom, alloc.Config{Cursors: db.opts.Cursors}); err != nil {
		return fmt.Errorf("heapkv: allocator: %w", err)
	}
	full := make([]string, len(paths))
	for i, p := range paths {
		full[i] = db.replicaPath(p)
		if i > 0 {
			if err := db.prepareNewMirror(full[i], i); err != nil {
				return err
			}
		}
	}
	db.manifest.paths = paths
	if db.heap, err = mirror.Create(db.heapConfig(), full); err != nil {
		return fmt.Errorf("heapkv: create heap: %w", err)
	}
	if err := db.openIndex(true, nil); err != nil {
		return err
	}
	log, err := wal.Open(db.walOptions(), 1)
	if err != nil {
		return fmt.Errorf("heapkv: create log: %w", err)
	}
	db.log.Store(log)
	if err := db.checkpoint(false); err != nil {
		return fmt.Errorf("heapkv: first checkpoint: %w", err)
	}
	if err := db.fs.Remove(db.fs.PathJoin(db.dir, creatingFileName)); err != nil {
		return fmt.Errorf("heapkv: finish creating %s: %w", db.dir, err)
	}
	return vfsutil.SyncDir(db.fs, db.dir)
}

func (db *DB) heapConfig() mirror.Config {
	return mirror.Config{
		FS: db.fs, DBID: db.id, BlockSize: db.geom.BlockSize, Logger: db.logger,
		// Every record up to the last applied one had its heap writes
		// issued before it committed.
		LSN:           db.applied.Load,
		OnStateChange: db.persistReplicas,
		// Test file systems (fault injection) must see every read,
		// unless a test asks for the map.
		MapReads: !db.opts.NoHeapMap && (db.rawFS == vfs.Default || db.opts.mapAnyFS),
		ReadOnly: db.opts.ReadOnly,
	}
}

func (db *DB) walOptions() wal.Options {
	return wal.Options{
		FS:          db.fs,
		Dir:         db.fs.PathJoin(db.dir, walDirName),
		DBID:        db.id,
		SegmentSize: db.opts.LogSegmentSize,
		// Enough spares for the segments a checkpoint frees, so that the
		// log reuses its files instead of zero-filling new ones.
		SpareSegments: db.spareLogSegments(),
		Logger:        db.logger,
		// Invariant 1: whatever flush makes records durable (syncThrough,
		// or a rotation inside Append) first flushes the heap if some
		// record appended so far points at heap bytes it does not carry
		// (durable.go).
		BeforeSync: db.beforeLogSync,
	}
}

// spareLogSegments is how many freed log segments the log keeps for reuse:
// the segments of the longest checkpoint interval (carriedLogLimit), and
// one more. A checkpoint frees an interval's segments, so a database whose
// intervals are short keeps no more than theirs.
func (db *DB) spareLogSegments() int {
	n := int64(2)
	if c := db.opts.CheckpointLogBytes; c > 0 {
		n = max(n, (maxCarriedIntervals*c+db.opts.LogSegmentSize-1)/db.opts.LogSegmentSize+1)
	}
	return int(min(n, 64))
}

// loadAllocSnapshot restores the allocator from the checkpoint's snapshot.
func (db *DB) loadAllocSnapshot(lsn base.LSN) error {
	name := allocFileName(lsn)
	b, err := readFile(db.fs, db.fs.PathJoin(db.dir, name), maxStateFileSize)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	if _, err := filehdr.Check(b, filehdr.KindAlloc, db.id); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	snap, err := alloc.UnmarshalSnapshot(b[filehdr.Size:])
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	if snap.Geometry() != db.geom {
		return fmt.Errorf("%w: %s: geometry %+v, manifest says %+v", ErrCorrupt, name, snap.Geometry(), db.geom)
	}
	if db.alloc, err = alloc.Restore(snap, alloc.Config{Cursors: db.opts.Cursors}); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, name, err)
	}
	return nil
}
