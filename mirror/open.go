package mirror

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
)

// ReplicaSpec describes one replica to Open, as the caller's durable replica
// table records it.
type ReplicaSpec struct {
	Path     string
	State    State // Resyncing is opened as Stale: a resync resumes only when asked
	StaleLSN base.LSN
	Detached bool
}

// OpenOptions describe the replicas to Open.
type OpenOptions struct {
	Replicas []ReplicaSpec

	// DurableLSN is an LSN all of whose writes every in-sync replica holds
	// durably (heapkv: the checkpoint's LSN). Writes after it must be
	// re-marked with MarkWritten (heapkv: by log replay). A stale replica
	// whose stale LSN is at least DurableLSN and that has no tracking
	// bitmap in Tracking gets an empty one (replay fills it); one whose
	// stale LSN is older needs a full copy.
	DurableLSN base.LSN

	// Tracking is the tracking state a checkpoint captured (Capture), or
	// nil. If it does not decode, Open logs why and ignores it.
	Tracking []byte
}

// Open opens existing replica files and checks that each belongs to
// cfg.DBID, has cfg.BlockSize and is the replica it is listed as. A file
// with a bad header is an error wrapping ErrCorrupt that names the file.
// A missing file (or directory) leaves its replica unavailable and stale
// (an in-sync one becomes stale at DurableLSN); Open fails, naming the
// file, if that leaves no in-sync replica. Open writes nothing.
func Open(cfg Config, o OpenOptions) (*Set, error) {
	s, err := newSet(cfg, len(o.Replicas))
	if err != nil {
		return nil, err
	}
	files := make([]vfs.File, len(o.Replicas))
	closeAll := func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	var firstMissing string
	inSync := 0
	for i, sp := range o.Replicas {
		f, err := openReplicaFile(cfg, sp.Path, i, sp.State == InSync)
		if err != nil {
			closeAll()
			return nil, err
		}
		files[i] = f
		switch {
		case f == nil && firstMissing == "":
			firstMissing = fmt.Sprintf("replica %d: %s is missing", i, sp.Path)
		case f != nil && sp.State == InSync:
			inSync++
		}
	}
	if inSync == 0 {
		closeAll()
		if firstMissing == "" {
			firstMissing = "the replica table lists none"
		}
		return nil, fmt.Errorf("%w: no in-sync heap replica: %s", ErrCorrupt, firstMissing)
	}

	// Marks beyond the end of every in-sync file are dropped (so a
	// damaged tracking state cannot make Open allocate without bound): a
	// block allocated at the checkpoint was synced to the in-sync
	// replicas, and later ones are re-marked by replay.
	var limit uint64
	hdr, bs := HeaderArea(cfg.BlockSize), int64(cfg.BlockSize)
	for i, f := range files {
		if f == nil || o.Replicas[i].State != InSync {
			continue
		}
		if fi, err := f.Stat(); err == nil && fi.Size() > hdr {
			limit = max(limit, uint64((fi.Size()-hdr+bs-1)/bs))
		}
	}
	var trk map[int]trackEntry
	if o.Tracking != nil {
		if trk, err = decodeTracking(o.Tracking, cfg.DBID, limit); err != nil {
			cfg.Logger.Warn("ignoring the replica tracking state: stale replicas resync from the log or in full", "err", err)
			trk = nil
		}
	}
	for i, sp := range o.Replicas {
		r := &replica{id: i, path: sp.Path, f: files[i], detached: sp.Detached, state: InSync}
		s.replicas = append(s.replicas, r)
		if sp.State == InSync {
			if r.f != nil {
				r.durable.Store(uint64(o.DurableLSN))
				continue
			}
			r.state, r.staleLSN, r.cause = Stale, o.DurableLSN, "replica file missing at open"
			r.track, r.trackLSN, r.synced = newBlockSet(), o.DurableLSN, newBlockSet()
			s.version.Add(1) // unacknowledged: the table must record it
			cfg.Logger.Warn("heap replica is missing; it is stale", "replica", i, "path", sp.Path)
			continue
		}
		r.state, r.staleLSN, r.cause = Stale, sp.StaleLSN, "stale when opened"
		r.synced = newBlockSet()
		e, ok := trk[i]
		if ok && e.synced != nil {
			r.synced = e.synced
		}
		switch {
		case ok && e.track != nil && e.trackLSN <= sp.StaleLSN:
			r.track, r.trackLSN = e.track, e.trackLSN
		case !ok && sp.StaleLSN >= o.DurableLSN:
			r.track, r.trackLSN = newBlockSet(), sp.StaleLSN
		case ok && e.track == nil:
			r.cause = "a full copy was pending"
		default:
			r.cause = fmt.Sprintf("no tracking bitmap covers stale LSN %d", sp.StaleLSN)
		}
		if r.f == nil {
			r.cause += "; replica file missing"
		}
	}
	s.finishOpen()
	return s, nil
}

// openReplicaFile opens and checks one replica file. It returns a nil file
// (and no error) if the file or its directory does not exist, or if a
// stale replica's file is empty (its creation was interrupted).
func openReplicaFile(cfg Config, p string, id int, inSync bool) (vfs.File, error) {
	// OpenReadWrite would create a missing file: look first.
	if _, err := cfg.FS.Stat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("mirror: open replica %d: %w", id, err)
	}
	var f vfs.File
	var err error
	if cfg.ReadOnly {
		f, err = cfg.FS.Open(p)
	} else {
		f, err = cfg.FS.OpenReadWrite(p, vfs.WriteCategoryUnspecified)
	}
	if err != nil {
		return nil, fmt.Errorf("mirror: open replica %d: %w", id, err)
	}
	if err := checkHeader(cfg, f, id); err != nil {
		empty := false
		if fi, serr := f.Stat(); serr == nil && fi.Size() == 0 {
			empty = true
		}
		f.Close()
		if empty && !inSync {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, p, err)
	}
	return f, nil
}

// Reopen opens the file of stale replica id again, for instance after its
// disk came back, checking its header. If the file does not exist but its
// directory does (a new or replaced disk), Reopen creates it: the replica
// then holds nothing, so its next resync copies every allocated block, and
// created is true. A file with a bad header (another database's, or
// damaged) is an error wrapping ErrCorrupt; a missing directory is
// ErrUnavailable. Reopen of an in-sync replica does nothing.
func (s *Set) Reopen(id int) (created bool, err error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	r, err := s.replica(id)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.state == InSync:
		return false, nil
	case r.state == Resyncing || r.owned:
		return false, fmt.Errorf("%w: replica %d", ErrBusy, id)
	}
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	f, err := openReplicaFile(s.cfg, r.path, id, false)
	if err != nil {
		return false, err
	}
	if f == nil {
		if _, err := s.cfg.FS.Stat(s.cfg.FS.PathDir(r.path)); err != nil {
			return false, fmt.Errorf("%w: replica %d: directory of %s: %w", ErrUnavailable, id, r.path, err)
		}
		if f, err = createFile(s.cfg, r.path, id); err != nil {
			return false, err
		}
		r.track, r.synced, r.cause, created = nil, newBlockSet(), "new replica file", true
		s.cfg.Logger.Info("created heap replica file; it needs a full copy", "replica", id, "path", r.path)
	}
	r.f = f
	s.publishLocked()
	return created, nil
}

func (s *Set) replica(id int) (*replica, error) {
	if id < 0 || id >= len(s.replicas) {
		return nil, fmt.Errorf("mirror: no replica %d (have %d)", id, len(s.replicas))
	}
	return s.replicas[id], nil
}
