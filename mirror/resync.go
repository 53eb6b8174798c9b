package mirror

import (
	"context"
	"errors"
	"fmt"

	"github.com/heapkv/heapkv/internal/pace"
)

// ResyncOptions control one Resync.
type ResyncOptions struct {
	// Allocated reports whether a block holds live data (heapkv: allocated
	// in the heap, including blocks freed but not yet reusable). Blocks it
	// rejects are not copied: a block allocated later is written, and every
	// write reaches a resyncing replica. Required.
	Allocated func(block uint64) bool

	// Blocks is the size of the device in blocks when the resync starts;
	// a full copy looks at blocks below it (later blocks are written while
	// the replica is resyncing).
	Blocks uint64

	// Rate limits the copy to this many bytes per second; 0 means no limit.
	Rate int64

	// Save, if set, is called each time another SaveBytes bytes have been
	// copied, with no lock of the Set held, so that the caller can make the
	// progress recorded in the sync bitmap durable (heapkv runs a
	// checkpoint, whose Capture saves it). A crash then loses at most
	// SaveBytes of copying. An error from Save is logged and the copy goes
	// on: the progress is only an optimisation.
	Save      func() error
	SaveBytes int64
}

// ResyncResult says what a Resync did.
type ResyncResult struct {
	Source   int   // replica copied from (the first in-sync one); -1 if none
	FullCopy bool  // no tracking bitmap covered the stale LSN
	Copied   int64 // blocks copied by this call
}

// Resync brings stale replica id up to date and makes it in sync. The
// replica's file must be open (see Reopen). It copies, in increasing order,
// every block that its tracking bitmap marks (every block below
// o.Blocks for a full copy), that its sync bitmap does not hold and that
// o.Allocated accepts, from an in-sync replica (another one if a read
// fails), recording each copied block in the sync bitmap. Meanwhile the
// replica receives every write, and a write and the copy of the same block
// never interleave.
//
// If ctx is cancelled, a source cannot be read or the replica fails, the
// replica becomes stale again, keeping its sync bitmap so the next Resync
// resumes; the error says why. On success the replica is in sync and
// OnStateChange has recorded it. Resync of an in-sync replica does nothing.
func (s *Set) Resync(ctx context.Context, id int, o ResyncOptions) (ResyncResult, error) {
	res := ResyncResult{Source: -1}
	if s.closed.Load() {
		return res, ErrClosed
	}
	if o.Allocated == nil {
		return res, errors.New("mirror: ResyncOptions.Allocated is nil")
	}
	r, err := s.replica(id)
	if err != nil {
		return res, err
	}
	s.mu.Lock()
	switch {
	case r.state == InSync:
		s.mu.Unlock()
		return res, nil
	case r.owned || r.state == Resyncing:
		s.mu.Unlock()
		return res, fmt.Errorf("%w: replica %d", ErrBusy, id)
	case r.f == nil:
		s.mu.Unlock()
		return res, fmt.Errorf("%w: replica %d: %s is not open", ErrUnavailable, id, r.path)
	case len(s.view.Load().readable) == 0:
		s.mu.Unlock()
		return res, fmt.Errorf("%w: no in-sync replica to copy from", ErrNoReplica)
	}
	res.Source = s.view.Load().readable[0].r.id
	res.FullCopy = r.track == nil
	r.owned, r.state, r.detached = true, Resyncing, false
	if r.synced == nil {
		r.synced = newBlockSet()
	}
	r.copied.Store(0)
	r.source.Store(int64(res.Source))
	r.full.Store(res.FullCopy)
	track, synced, staleLSN := r.track, r.synced, r.staleLSN
	s.copiers++
	s.changedLocked()
	s.mu.Unlock()
	s.cfg.Logger.Info("resyncing heap replica", "replica", id, "source", res.Source, "full", res.FullCopy,
		"stale_lsn", staleLSN, "to_copy", func() int64 {
			if track == nil {
				return -1
			}
			return track.CountAndNot(synced)
		}())

	err = s.copyAll(ctx, r, track, synced, o)
	res.Copied = r.copied.Load()
	if err == nil {
		err = s.finishResync(r)
	}
	if err != nil {
		s.abortResync(r, err)
		return res, err
	}
	return res, s.ack()
}

// copyAll is the copy pass of Resync.
func (s *Set) copyAll(ctx context.Context, r *replica, track, synced *blockSet, o ResyncOptions) error {
	bs := int64(s.cfg.BlockSize)
	lim := pace.New(o.Rate)
	limit := ^uint64(0)
	if track == nil {
		limit = o.Blocks
	}
	buf := make([]byte, int(s.stripeBlocks)*s.cfg.BlockSize)
	var sinceSave int64
	for pos := uint64(0); ; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mirror: resync of replica %d stopped: %w", r.id, err)
		}
		b, ok := nextNeeded(track, synced, pos, limit)
		if !ok {
			return nil
		}
		if !o.Allocated(b) {
			pos = b + 1
			continue
		}
		// Extend the run to consecutive needed, allocated blocks of the
		// same stripe unit, ending where the next save is due: progress is
		// saved as soon as SaveBytes more have been copied, not up to a
		// stripe unit later.
		end := min((b/s.stripeBlocks+1)*s.stripeBlocks, limit)
		if o.Save != nil && o.SaveBytes > 0 {
			end = min(end, b+uint64(max(1, (o.SaveBytes-sinceSave+bs-1)/bs)))
		}
		e := b + 1
		for e < end && (track == nil || track.Test(e)) && !synced.Test(e) && o.Allocated(e) {
			e++
		}
		if err := lim.Wait(ctx, int64(e-b)*bs); err != nil {
			return fmt.Errorf("mirror: resync of replica %d stopped: %w", r.id, err)
		}
		if err := s.copyRun(r, synced, b, int(e-b), buf, o.Allocated); err != nil {
			return err
		}
		pos = e
		if sinceSave += int64(e-b) * bs; o.Save != nil && sinceSave >= o.SaveBytes {
			sinceSave = 0
			if err := o.Save(); err != nil {
				s.cfg.Logger.Warn("saving resync progress failed", "replica", r.id, "err", err)
			}
		}
	}
}

// copyRun copies blocks [b, b+n), all in one stripe unit, to r.
func (s *Set) copyRun(r *replica, synced *blockSet, b uint64, n int, buf []byte, allocated func(uint64) bool) error {
	if s.closed.Load() {
		return ErrClosed
	}
	bs := s.cfg.BlockSize
	s.mu.RLock()
	if r.state != Resyncing {
		s.mu.RUnlock()
		return fmt.Errorf("mirror: replica %d went stale during its resync: %s", r.id, r.cause)
	}
	v := s.view.Load()
	var target member
	for _, m := range v.writable {
		if m.r == r {
			target = m
		}
	}
	if target.f == nil { // closed meanwhile
		s.mu.RUnlock()
		return ErrClosed
	}
	stripes := s.lockStripes(b, n)
	// A foreground write may have updated some blocks meanwhile (they are
	// synced now), and some may have been freed.
	var err error
	p := buf[:n*bs]
	read := false
	for i := 0; i < n && err == nil; {
		if synced.Test(b+uint64(i)) || !allocated(b+uint64(i)) {
			i++
			continue
		}
		j := i + 1
		for j < n && !synced.Test(b+uint64(j)) && allocated(b+uint64(j)) {
			j++
		}
		if !read {
			if err = s.readAny(v, p, b); err != nil {
				break
			}
			read = true
		}
		if _, werr := target.f.WriteAt(p[i*bs:j*bs], s.offset(b+uint64(i))); werr != nil {
			err = fmt.Errorf("write %d blocks at block %d of %s: %w", j-i, b+uint64(i), r.path, werr)
			s.unlockStripes(stripes)
			s.mu.RUnlock()
			s.fail([]failure{{r, err}}, true)
			return fmt.Errorf("mirror: resync of replica %d: %w", r.id, err)
		}
		s.written.Add(1)
		synced.SetRange(b+uint64(i), j-i)
		r.copied.Add(int64(j - i))
		i = j
	}
	s.unlockStripes(stripes)
	if v.multi && read {
		s.noteDirty(b, n)
	}
	s.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("mirror: resync of replica %d: %w", r.id, err)
	}
	return nil
}

// readAny reads p at block from the first in-sync replica that can.
func (s *Set) readAny(v *view, p []byte, block uint64) error {
	var first error
	for _, m := range v.readable {
		err := s.readFrom(m, p, block)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return fmt.Errorf("%w: no in-sync replica to copy from", ErrNoReplica)
	}
	return fmt.Errorf("no source could be read: %w", first)
}

// finishResync syncs the target and makes it in sync.
func (s *Set) finishResync(r *replica) error {
	s.mu.RLock()
	f := r.f
	ok := r.state == Resyncing && f != nil
	s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("mirror: replica %d went stale during its resync: %s", r.id, r.cause)
	}
	if err := f.SyncData(); err != nil {
		err = fmt.Errorf("mirror: resync of replica %d: sync %s: %w", r.id, r.path, err)
		s.fail([]failure{{r, err}}, true)
		return err
	}
	s.syncs.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.state != Resyncing {
		return fmt.Errorf("mirror: replica %d went stale during its resync: %s", r.id, r.cause)
	}
	// Every write since the resync began reached r, and every block it
	// missed before has been copied and synced: it holds what the in-sync
	// replicas hold, and as much of it durably as they do.
	var durable uint64
	for _, m := range s.view.Load().readable {
		durable = max(durable, m.r.durable.Load())
	}
	r.durable.Store(durable)
	r.state, r.owned, r.cause = InSync, false, ""
	r.track, r.synced, r.staleLSN, r.trackLSN = nil, nil, 0, 0
	s.copiers--
	s.changedLocked()
	s.cfg.Logger.Info("heap replica is in sync", "replica", r.id, "copied_blocks", r.copied.Load())
	return nil
}

// abortResync returns r to stale after a failed or cancelled resync. The
// blocks written to it since its last sync are synced first; if that
// fails they are marked again.
func (s *Set) abortResync(r *replica, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.state == Resyncing {
		lost := r.f == nil || r.f.SyncData() != nil || r.wbErr != nil // writeback.go
		r.wbErr = nil
		s.goStaleLocked(r, cause.Error(), lost)
	}
	if r.owned {
		r.owned = false
		s.copiers--
	}
	s.changedLocked()
	s.cfg.Logger.Warn("heap replica resync stopped; it stays stale", "replica", r.id, "copied_blocks", r.copied.Load(), "err", cause)
}
