package mirror

import (
	"fmt"

	"github.com/heapkv/heapkv/internal/base"
)

// Detach makes in-sync replica id stale, as a planned removal: its file is
// synced and closed, it is not written again until a Resync, and its
// tracking bitmap starts empty at lsn, which must be an LSN all of whose
// writes were issued before the call (if the sync fails, the blocks written
// since the last Sync are marked and the stale LSN is that Sync's). The
// last in-sync replica cannot be detached. Detaching a stale replica only
// marks it detached; a resyncing one is ErrBusy. Detach returns after
// OnStateChange has recorded the change.
func (s *Set) Detach(id int, lsn base.LSN) error {
	if s.closed.Load() {
		return ErrClosed
	}
	r, err := s.replica(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	switch {
	case r.state == Resyncing || r.owned:
		s.mu.Unlock()
		return fmt.Errorf("%w: replica %d", ErrBusy, id)
	case r.state == Stale:
		if !r.detached {
			r.detached = true
			s.changedLocked()
		}
	default:
		others := 0
		for _, m := range s.view.Load().readable {
			if m.r != r {
				others++
			}
		}
		if others == 0 {
			s.mu.Unlock()
			return fmt.Errorf("%w: replica %d is the last in-sync replica", ErrNoReplica, id)
		}
		// No write is in flight (s.mu is held exclusively): after a
		// successful sync the file holds every write issued so far.
		err := r.f.SyncData()
		if err == nil && r.wbErr != nil {
			err = r.wbErr // a write-back lost writes that this sync cannot see (writeback.go)
		}
		r.wbErr = nil
		if err == nil {
			s.syncs.Add(1)
			if uint64(lsn) > r.durable.Load() {
				r.durable.Store(uint64(lsn))
			}
		}
		s.goStaleLocked(r, "detached", err != nil)
		r.detached = true
		r.f.Close()
		r.f = nil
		s.changedLocked()
	}
	s.mu.Unlock()
	return s.ack()
}

// MarkWritten records that blocks [block, block+n) were written: the
// tracking bitmap of every replica that is not in sync gets them and its
// sync bitmap loses them. Recovery calls it for every heap write it replays
// from the log, which makes the tracking state that a checkpoint captured
// whole again after a crash.
func (s *Set) MarkWritten(block uint64, n int) {
	if n <= 0 {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.replicas {
		if r.state != InSync {
			r.noteMissed(block, n)
		}
	}
}

// Status describes one replica.
type Status struct {
	ID        int
	Path      string
	State     State
	StaleLSN  base.LSN // LSN the replica holds (not in sync)
	Detached  bool     // made stale by Detach
	Available bool     // its file is open
	FullCopy  bool     // no tracking bitmap: a resync copies every allocated block
	TrackLSN  base.LSN // LSN its tracking bitmap starts at (not a full copy)
	Marked    int64    // blocks marked in its tracking bitmap
	ToCopy    int64    // marked blocks not yet synced (some may be free); -1 for a full copy
	Synced    int64    // blocks its sync bitmap holds
	Copied    int64    // blocks copied by the running or last resync
	Source    int      // source replica of the running or last resync; -1 if none
	LastFull  bool     // the running or last resync is a full copy
	Cause     string   // why it is stale
	ReadErrs  int64    // failed reads of this replica
	BadCopies int64    // copies found bad by verified reads and scrubs
	Repairs   int64    // bad copies rewritten
}

// Status returns the status of every replica, in id order.
func (s *Set) Status() []Status {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Status, len(s.replicas))
	for i, r := range s.replicas {
		st := Status{
			ID: r.id, Path: r.path, State: r.state, Detached: r.detached, Available: r.f != nil,
			Copied: r.copied.Load(), Source: int(r.source.Load()), LastFull: r.full.Load(),
			ReadErrs: r.readErrs.Load(), BadCopies: r.badSeen.Load(), Repairs: r.repairs.Load(),
		}
		if r.state != InSync {
			st.StaleLSN, st.Cause = r.staleLSN, r.cause
			st.FullCopy = r.track == nil
			st.ToCopy = -1
			if r.synced != nil {
				st.Synced = r.synced.Count()
			}
			if r.track != nil {
				st.TrackLSN = r.trackLSN
				st.Marked = r.track.Count()
				st.ToCopy = r.track.CountAndNot(r.synced)
			}
		}
		out[i] = st
	}
	return out
}
