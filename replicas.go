package heapkv

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/mirror"
)

// Heap replicas (DESIGN "Mirrors"; ARCHITECTURE "Mirrors"). The mirror
// package keeps the replica files in step; this file connects it to the
// database: the replica table in the MANIFEST, the tracking state in
// checkpoints, attaching and detaching, and reads that heal.

// ReplicaState is the state of a heap replica.
type ReplicaState int

// The replica states: InSync -> Stale -> Resyncing -> InSync.
const (
	ReplicaInSync    ReplicaState = iota // read and written; holds every live value
	ReplicaStale                         // neither read nor written; its tracking bitmap says what it missed
	ReplicaResyncing                     // written, being brought up to date, not read
)

// String returns the state's name, as mirror.State names it.
func (s ReplicaState) String() string { return mirror.State(s).String() }

// ReplicaStatus describes one heap replica.
type ReplicaStatus struct {
	ID           int          `json:"id"`   // 0 is the heap in the database directory; mirrors follow in the order added
	Path         string       `json:"path"` // the replica's heap file
	State        ReplicaState `json:"state"`
	StaleLSN     uint64       `json:"stale_lsn"`      // not in sync: the replica holds every write up to this LSN
	Detached     bool         `json:"detached"`       // stale by DetachReplica: Open does not attach it automatically
	Available    bool         `json:"available"`      // its file is open (a stale replica whose disk is gone is not)
	FullCopy     bool         `json:"full_copy"`      // no tracking bitmap covers StaleLSN: the next resync copies every allocated block
	BlocksToSync int64        `json:"blocks_to_sync"` // blocks changed and not yet copied (an upper bound: some may be free); -1 if FullCopy
	BlocksSynced int64        `json:"blocks_synced"`  // blocks already brought up to date (the sync bitmap of an interrupted resync)
	BlocksCopied int64        `json:"blocks_copied"`  // blocks copied by the running or last resync
	BytesCopied  int64        `json:"bytes_copied"`
	Source       int          `json:"source"`         // replica the running or last resync copies from; -1 if none
	LastFullCopy bool         `json:"last_full_copy"` // the running or last resync is a full copy
	Cause        string       `json:"cause"`          // why the replica is not in sync
	ReadErrors   int64        `json:"read_errors"`    // reads of this replica that failed
	BadCopies    int64        `json:"bad_copies"`     // copies on it found bad (checksum or read error) by reads and scrubs
	Repairs      int64        `json:"repairs"`        // bad copies on it rewritten from a good one
}

// attachOp is a running AttachReplica; others for the same replica wait.
type attachOp struct {
	done chan struct{}
	err  error // set before done is closed
}

// Replicas returns the status of every heap replica, in id order (nil
// after Close).
func (db *DB) Replicas() []ReplicaStatus {
	if err := db.enter(); err != nil {
		return nil
	}
	defer db.leave()
	bs := int64(db.geom.BlockSize)
	var out []ReplicaStatus
	for _, st := range db.heap.Status() {
		out = append(out, ReplicaStatus{
			ID: st.ID, Path: st.Path, State: ReplicaState(st.State), StaleLSN: uint64(st.StaleLSN),
			Detached: st.Detached, Available: st.Available, FullCopy: st.FullCopy,
			BlocksToSync: st.ToCopy, BlocksSynced: st.Synced, BlocksCopied: st.Copied, BytesCopied: st.Copied * bs,
			Source: st.Source, LastFullCopy: st.LastFull, Cause: st.Cause,
			ReadErrors: st.ReadErrs, BadCopies: st.BadCopies, Repairs: st.Repairs,
		})
	}
	return out
}

// DetachReplica makes in-sync replica id stale at once (a planned removal,
// for instance to back up its disk): it is synced and closed, and from then
// on a tracking bitmap records every block written, so that AttachReplica
// copies only those. The change is durable when DetachReplica returns. A
// detached replica is not attached again automatically by Open. The last
// in-sync replica cannot be detached (ErrNoReplica).
func (db *DB) DetachReplica(id int) error {
	if err := db.errIfReadOnly("detach a replica of"); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	// Every record up to the applied LSN had its heap writes issued before it
	// committed: the synced replica holds them all.
	if err := db.heap.Detach(id, db.applied.Load()); err != nil {
		return fmt.Errorf("heapkv: detach replica %d: %w", id, err)
	}
	return nil
}

// AttachReplica brings stale replica id up to date and makes it in sync,
// returning when it is (or when ctx is cancelled: the progress made so far
// is kept for the next attempt). It reopens the replica's file (creating it
// if its directory exists but the file does not, after writing the mirror's
// marker there; a file or marker of another database is refused with an
// error wrapping ErrCorrupt) and copies, from an in-sync replica, only the
// blocks written since the replica went stale that are still allocated, or
// every allocated block when no tracking bitmap covers its stale LSN.
// Writes go on meanwhile and reach it too. Options.ResyncRate paces the
// copy; Replicas reports progress. If an attach of the same replica is
// already running (Open starts one for each stale replica whose heap file
// or marker is back), AttachReplica waits for it. Unlike Open's automatic
// attach, AttachReplica uses a mirror directory that holds neither the heap
// file nor the marker (a new or replaced disk): call it once the right disk
// is mounted there.
func (db *DB) AttachReplica(ctx context.Context, id int) error {
	if err := db.errIfReadOnly("attach a replica of"); err != nil {
		return err
	}
	return db.attach(ctx, id, true)
}

// attach is AttachReplica; explicit is false for Open's automatic attaches
// (see prepareAttach).
func (db *DB) attach(ctx context.Context, id int, explicit bool) error {
	for {
		if err := db.enter(); err != nil {
			return err
		}
		if id < 0 || id >= db.heap.Replicas() {
			db.leave()
			return fmt.Errorf("heapkv: attach replica %d: there are %d replicas", id, db.heap.Replicas())
		}
		db.attaching.mu.Lock()
		op, running := db.attaching.ops[id]
		if !running {
			op = &attachOp{done: make(chan struct{})}
			if db.attaching.ops == nil {
				db.attaching.ops = map[int]*attachOp{}
			}
			db.attaching.ops[id] = op
			db.bg.wg.Add(1) // Close waits for the copy after cancelling it
		}
		db.attaching.mu.Unlock()
		db.leave()
		if !running {
			op.err = db.runAttach(ctx, id, explicit)
			db.attaching.mu.Lock()
			delete(db.attaching.ops, id)
			db.attaching.mu.Unlock()
			close(op.done)
			db.bg.wg.Done()
			return op.err
		}
		select {
		case <-op.done:
			if errors.Is(op.err, context.Canceled) && ctx.Err() == nil {
				continue // the attach we joined was cancelled by its caller
			}
			if explicit && errors.Is(op.err, errUnmarked) {
				continue // an automatic attach refused what this one may do
			}
			return op.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// defaultResyncSaveBytes is how much a resync copies between checkpoints
// that make its progress durable: at the copy rates measured (about
// 900 MB/s, BENCHMARKS.md) that is a checkpoint every tenth of a second or
// so at most, whose cost (an index flush, a bitmap snapshot of a few KiB per
// GiB of heap) is small next to 64 MiB of copying.
const defaultResyncSaveBytes = 64 << 20

func (db *DB) runAttach(ctx context.Context, id int, explicit bool) error {
	ctx, cancel := db.untilClose(ctx)
	defer cancel()
	p := db.replicaFile(id)
	markAfter, err := db.prepareAttach(id, p, explicit)
	if err != nil {
		return fmt.Errorf("heapkv: attach replica %d: %w", id, err)
	}
	if _, err := db.heap.Reopen(id); err != nil {
		return fmt.Errorf("heapkv: attach replica %d: %w", id, err)
	}
	if markAfter {
		if err := db.writeMirrorMarker(p, id); err != nil {
			return fmt.Errorf("heapkv: attach replica %d: %w", id, err)
		}
	}
	saveBytes := db.opts.resyncSaveBytes
	if saveBytes <= 0 {
		saveBytes = defaultResyncSaveBytes
	}
	res, err := db.heap.Resync(ctx, id, mirror.ResyncOptions{
		Allocated: db.blockAllocated,
		Blocks:    uint64(db.alloc.Segments()) * uint64(db.geom.SegmentBlocks),
		Rate:      db.opts.ResyncRate,
		// A checkpoint captures the sync bitmap (after fsyncing the
		// replica), so a crash mid-resync loses at most saveBytes of copying.
		Save: func() error {
			if err := db.Checkpoint(); err != nil && !errors.Is(err, ErrClosed) {
				return err
			}
			return nil // closing: Close checkpoints anyway
		},
		SaveBytes: saveBytes,
	})
	if err != nil {
		if db.stopping() {
			return fmt.Errorf("%w: attach replica %d stopped: %w", ErrClosed, id, err)
		}
		return fmt.Errorf("heapkv: attach replica %d: %w", id, err)
	}
	db.logger.Info("heap replica attached", "replica", id, "source", res.Source, "full_copy", res.FullCopy, "copied_blocks", res.Copied)
	return nil
}

// blockAllocated is the resync's test of whether a block holds live data:
// allocated, including in-flight claims and frees not yet reusable (an open
// snapshot may still read them).
func (db *DB) blockAllocated(b uint64) bool {
	return db.alloc.IsAllocated(alloc.Extent{Start: b, Len: 1})
}

// startAutoAttach attaches, in the background, every stale replica that was
// not detached by hand and whose heap file or marker is there (a failed disk
// that is back, or a mirror new to the database): see autoAttachable.
func (db *DB) startAutoAttach() {
	if db.opts.noAutoAttach {
		return
	}
	var ids []int
	for _, st := range db.heap.Status() {
		if st.State == mirror.Stale && !st.Detached && db.autoAttachable(st) {
			ids = append(ids, st.ID)
		}
	}
	if len(ids) == 0 {
		return
	}
	db.bg.wg.Add(1)
	go func() {
		defer db.bg.wg.Done()
		for _, id := range ids {
			if err := db.attach(context.Background(), id, false); err != nil {
				if errors.Is(err, ErrClosed) {
					return
				}
				db.logger.Warn("automatic attach of a heap replica failed", "replica", id, "err", err)
			}
		}
	}()
}

// persistReplicas is the heap's OnStateChange: it installs a MANIFEST with
// the current replica table (same checkpoint), so a replica that went stale
// is recorded as stale before any log record that relies on that becomes
// durable (the heap calls it before its Sync returns, and every log sync
// follows a heap sync).
func (db *DB) persistReplicas() error {
	if db.opts.ReadOnly {
		return nil // a replica that failed a read stays stale in memory only
	}
	db.manifest.mu.Lock()
	defer db.manifest.mu.Unlock()
	if db.manifest.last.seq == 0 {
		return nil // creating: the first checkpoint records the table
	}
	m := db.manifest.last
	m.replicas, m.meta = db.replicaTableLocked()
	if slices.Equal(m.replicas, db.manifest.last.replicas) && slices.Equal(m.meta, db.manifest.last.meta) {
		return nil
	}
	return db.installManifestLocked(m)
}

// replicaTableLocked returns the replica table to record: paths and, unless
// every replica is in sync, states. REQUIRES: db.manifest.mu held.
func (db *DB) replicaTableLocked() ([]string, []replicaMeta) {
	sts := db.heap.Status()
	meta := make([]replicaMeta, len(sts))
	all := true
	for i, st := range sts {
		if st.State != mirror.InSync {
			all = false
			meta[i] = replicaMeta{state: st.State, detached: st.Detached, staleLSN: st.StaleLSN}
		}
	}
	if all {
		meta = nil
	}
	return slices.Clone(db.manifest.paths), meta
}

// replicaFile returns the heap file of replica id.
func (db *DB) replicaFile(id int) string {
	db.manifest.mu.Lock()
	defer db.manifest.mu.Unlock()
	return db.replicaPath(db.manifest.paths[id])
}

// replicaPath turns a path from the replica table into a file path.
func (db *DB) replicaPath(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return db.fs.PathJoin(db.dir, p)
}

// mirrorPath returns how the replica table records a mirror directory's
// heap file.
func mirrorPath(dir string) string { return filepath.Join(dir, heapFileName) }

// openHeap opens the replicas the MANIFEST lists, and the mirrors in
// Options.Mirrors that it does not (as new, stale replicas: they get a full
// copy when attached), with the tracking state of the checkpoint.
func (db *DB) openHeap(m manifest, manifestName string) error {
	db.manifest.paths = slices.Clone(m.replicas)
	specs := make([]mirror.ReplicaSpec, len(m.replicas))
	for i, p := range m.replicas {
		specs[i] = mirror.ReplicaSpec{Path: db.replicaPath(p)}
		if m.meta != nil {
			specs[i].State, specs[i].StaleLSN, specs[i].Detached = m.meta[i].state, m.meta[i].staleLSN, m.meta[i].detached
		}
	}
	for _, d := range db.opts.Mirrors {
		if db.opts.ReadOnly {
			break // a new mirror would need its file made
		}
		if p := mirrorPath(d); !slices.Contains(db.manifest.paths, p) {
			db.logger.Info("adding a heap mirror", "path", db.replicaPath(p), "replica", len(db.manifest.paths))
			db.manifest.paths = append(db.manifest.paths, p)
			specs = append(specs, mirror.ReplicaSpec{Path: db.replicaPath(p), State: mirror.Stale})
		}
	}
	var tracking []byte
	if m.tracking {
		name := trackingFileName(m.checkpointLSN)
		b, err := readFile(db.fs, db.fs.PathJoin(db.dir, name), maxStateFileSize)
		if err != nil {
			// It only saves copying: stale replicas fall back to the log
			// or to a full copy.
			db.logger.Warn("cannot read the replica tracking state", "file", name, "err", err)
		}
		tracking = b
	}
	var err error
	db.heap, err = mirror.Open(db.heapConfig(), mirror.OpenOptions{
		Replicas:   specs,
		DurableLSN: m.checkpointLSN,
		Tracking:   tracking,
	})
	if err != nil {
		// The MANIFEST and the heap disagree (or a replica is damaged or
		// foreign): name both.
		return fmt.Errorf("%w: heap (listed in %s): %w", ErrCorrupt, manifestName, err)
	}
	return nil
}

// makeMirrorDirs creates the directories (the last element only) of
// mirrors new to the database and writes their markers. The directory of a
// replica already in the table is never created: if its disk is not
// mounted, creating it would put the replica on the wrong disk. A known
// mirror whose heap file is open but that has no marker (made before
// markers existed) gets one: mirror.Open checked its header.
func (db *DB) makeMirrorDirs() error {
	known := len(db.manifest.last.replicas)
	sts := db.heap.Status()
	for id := 1; id < len(db.manifest.paths); id++ {
		p := db.replicaPath(db.manifest.paths[id])
		if id >= known {
			if _, err := mkdirLeaf(db.fs, db.fs.PathDir(p), dirMode(db.opts.FileMode)); err != nil {
				return fmt.Errorf("heapkv: mirror directory of %s: %w", p, err)
			}
		} else if !sts[id].Available {
			continue
		}
		if err := db.markMirror(p, id, known, sts[id].Available); err != nil {
			return err
		}
	}
	return nil
}

// newMirrorPaths returns the replica table of a new database: the heap in
// the database directory and one per Options.Mirrors, refusing a mirror
// directory that already holds a heap file or a mirror marker.
func (db *DB) newMirrorPaths() ([]string, error) {
	paths := []string{heapFileName}
	for _, d := range db.opts.Mirrors {
		p := mirrorPath(d)
		for _, f := range []string{db.replicaPath(p), db.markerPath(db.replicaPath(p))} {
			if _, err := db.fs.Stat(f); err == nil {
				return nil, fmt.Errorf("%w: mirror %s already holds %s (of another database?); give an empty directory", ErrCorrupt, db.fs.PathDir(f), f)
			}
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// isMirrorDir reports whether name, an entry of the database directory,
// is (or contains) the directory of one of Options.Mirrors.
func (db *DB) isMirrorDir(name string) bool {
	for _, d := range db.opts.Mirrors {
		if !filepath.IsAbs(d) && strings.SplitN(filepath.ToSlash(filepath.Clean(d)), "/", 2)[0] == name {
			return true
		}
	}
	return false
}

// removeHalfCreatedMirrors removes the mirror heap files and markers that
// an interrupted creation made: those whose header names the database ID
// in the CREATING marker.
func (db *DB) removeHalfCreatedMirrors() error {
	id, err := readFile(db.fs, db.fs.PathJoin(db.dir, creatingFileName), 64)
	if err != nil || len(id) != len(db.id) {
		return nil // an older marker, or none: nothing of ours to find
	}
	for _, d := range db.opts.Mirrors {
		p := db.replicaPath(mirrorPath(d))
		mp := db.markerPath(p)
		if b, err := readFile(db.fs, mp, mirrorMarkerSize); err == nil {
			if h, err := filehdr.Decode(b); err == nil && h.Kind == filehdr.KindMirror && string(h.DBID[:]) == string(id) {
				if err := db.fs.Remove(mp); err != nil {
					return fmt.Errorf("heapkv: remove half-created mirror marker %s: %w", mp, err)
				}
			}
		}
		f, err := db.fs.Open(p)
		if err != nil {
			continue
		}
		b := make([]byte, filehdr.Size)
		_, err = f.ReadAt(b, 0)
		f.Close()
		if err != nil {
			continue
		}
		if h, err := filehdr.Decode(b); err == nil && h.Kind == filehdr.KindHeap && string(h.DBID[:]) == string(id) {
			if err := db.fs.Remove(p); err != nil {
				return fmt.Errorf("heapkv: remove half-created mirror %s: %w", p, err)
			}
		}
	}
	return nil
}
