package mirror

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sync"

	"github.com/heapkv/heapkv/internal/base"
)

// WriteAt writes p starting at the first byte of block on every replica
// that is in sync or resyncing, and marks the blocks in the tracking bitmap
// of every stale replica. p need not be a whole number of blocks; the rest
// of the last block is left as it was.
//
// It succeeds if at least one in-sync replica accepted the write. A replica
// that failed goes stale (an in-sync one only if another in-sync replica
// accepted the write), and WriteAt returns only after OnStateChange has
// recorded that.
func (s *Set) WriteAt(p []byte, block uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if len(p) == 0 {
		return nil
	}
	bs := s.cfg.BlockSize
	n := (len(p) + bs - 1) / bs
	full := len(p) / bs
	s.mu.RLock()
	v := s.view.Load()
	var stripes uint64
	if v.copying {
		stripes = s.lockStripes(block, n)
	}
	for _, r := range v.stale {
		r.noteMissed(block, n)
	}
	var failed []failure
	okInSync := 0
	for _, m := range v.writable {
		if _, err := m.f.WriteAt(p, s.offset(block)); err != nil {
			failed = append(failed, failure{m.r, fmt.Errorf("write %d bytes at block %d of %s: %w", len(p), block, m.r.path, err)})
			continue
		}
		if m.r.state == InSync {
			okInSync++
		} else if full > 0 {
			m.r.synced.SetRange(block, full) // holds the current bytes now
		}
	}
	if v.multi {
		s.noteDirty(block, n)
	}
	s.written.Add(1)
	if okInSync > 0 {
		s.wb.note(s.offset(block), int64(len(p)))
	}
	s.unlockStripes(stripes)
	s.mu.RUnlock()
	if s.pop != nil && okInSync > 0 {
		s.pop.noteWrite(s.offset(block) + int64(len(p)))
	}
	if len(failed) > 0 {
		return s.fail(failed, okInSync > 0)
	}
	if okInSync == 0 {
		return fmt.Errorf("%w: no in-sync replica to write block %d to", ErrNoReplica, block)
	}
	return nil
}

// noteMissed records that r, stale, missed a write of blocks [b, b+n).
// REQUIRES: s.mu held (either mode).
func (r *replica) noteMissed(b uint64, n int) {
	if r.track != nil {
		r.track.SetRange(b, n)
	}
	if r.synced != nil {
		r.synced.ClearRange(b, n)
	}
}

// noteDirty remembers a write until the Sync after next has made it durable.
func (s *Set) noteDirty(b uint64, n int) {
	s.dirtyMu.Lock()
	if l := len(s.dirty); l > 0 && s.dirty[l-1].block+uint64(s.dirty[l-1].n) == b {
		s.dirty[l-1].n += n
	} else {
		s.dirty = append(s.dirty, span{b, n})
	}
	s.dirtyMu.Unlock()
}

// lockStripes locks the stripes of the units blocks [b, b+n) touch, in
// index order, and returns the set of locked stripes.
func (s *Set) lockStripes(b uint64, n int) uint64 {
	var mask uint64
	for u := b / s.stripeBlocks; u <= (b+uint64(n)-1)/s.stripeBlocks; u++ {
		mask |= 1 << (u % nStripes)
		if mask == ^uint64(0) {
			break
		}
	}
	for m := mask; m != 0; m &= m - 1 {
		s.stripes[trailingZeros(m)].Lock()
	}
	return mask
}

func (s *Set) unlockStripes(mask uint64) {
	for m := mask; m != 0; m &= m - 1 {
		s.stripes[trailingZeros(m)].Unlock()
	}
}

func trailingZeros(x uint64) int { return bits.TrailingZeros64(x) }

// failure is an I/O error on one replica.
type failure struct {
	r   *replica
	err error
}

// fail handles I/O errors: each failed replica that is resyncing goes stale;
// each in-sync one goes stale only if othersOK (another in-sync replica
// succeeded at the same operation), else the operation fails and the
// replica stays in sync (it is the last one). It returns the operation's
// error: nil if othersOK and the state change was acknowledged.
func (s *Set) fail(failed []failure, othersOK bool) error {
	s.mu.Lock()
	changed := false
	for _, f := range failed {
		r := f.r
		if r.state == Stale || (r.state == InSync && !othersOK) {
			continue
		}
		s.cfg.Logger.Error("heap replica failed; it is stale until resynced", "replica", r.id, "path", r.path, "err", f.err)
		s.goStaleLocked(r, f.err.Error(), true)
		changed = true
	}
	if changed {
		s.changedLocked()
	}
	s.mu.Unlock()
	err := s.ack()
	if !othersOK {
		return fmt.Errorf("mirror: %w", failed[0].err)
	}
	return err
}

// goStaleLocked makes r stale. If lost, r may have lost every write since
// its last successful sync: those blocks (the dirty spans) are marked in its
// tracking bitmap and cleared from its sync bitmap. REQUIRES: s.mu held
// exclusively; the caller calls changedLocked.
func (s *Set) goStaleLocked(r *replica, cause string, lost bool) {
	if r.state == InSync {
		r.staleLSN = base.LSN(r.durable.Load())
		r.track, r.trackLSN = newBlockSet(), r.staleLSN
		r.synced = newBlockSet()
	}
	r.state = Stale
	r.cause = cause
	if lost {
		s.dirtyMu.Lock()
		for _, l := range [][]span{s.syncing, s.dirty} {
			for _, sp := range l {
				r.noteMissed(sp.block, sp.n)
			}
		}
		s.dirtyMu.Unlock()
	}
}

// ReadAt fills p from the blocks starting at block, read from the first
// in-sync replica. Blocks never written read as zeros. It does not fall
// back to another replica by itself: only a caller that can check the bytes
// should choose between copies (see ReadVerified), and a read error on one
// replica is then repaired rather than hidden.
func (s *Set) ReadAt(p []byte, block uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	v := s.view.Load()
	if len(v.readable) == 0 {
		return fmt.Errorf("%w: no in-sync replica to read block %d from", ErrNoReplica, block)
	}
	return s.readFrom(v.readable[0], p, block)
}

func (s *Set) readFrom(m member, p []byte, block uint64) error {
	if block > uint64(math.MaxInt64-s.headerBytes)/uint64(s.cfg.BlockSize) {
		return fmt.Errorf("mirror: read block %d: beyond any file's reach", block) // offset would wrap
	}
	n, err := m.f.ReadAt(p, s.offset(block))
	if err != nil && !errors.Is(err, io.EOF) {
		m.r.readErrs.Add(1)
		return fmt.Errorf("mirror: read %d bytes at block %d of %s: %w", len(p), block, m.r.path, err)
	}
	clear(p[n:])
	return nil
}

// Sync makes every completed WriteAt durable on every replica that is in
// sync or resyncing (in parallel when there are several). It succeeds if at
// least one in-sync replica synced; the others go stale. Before returning
// it makes sure OnStateChange has recorded every state change so far, so a
// log record made durable after a Sync never relies on a replica that the
// durable replica table still calls in sync but that missed its data.
// When nothing was written to any replica file and no replica changed
// state since the last Sync that succeeded on every writable replica, it
// issues no fsync (Syncs does not move) but still does the rest.
func (s *Set) Sync() error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	var lsn base.LSN
	if s.cfg.LSN != nil {
		lsn = s.cfg.LSN()
	}
	s.mu.RLock()
	v := s.view.Load()
	s.dirtyMu.Lock()
	s.syncing, s.dirty = s.dirty, nil
	s.dirtyMu.Unlock()
	// Nothing written since the last Sync that reached every replica: the
	// files hold nothing to flush. Writes that finish after this load move
	// written again, so the next Sync flushes them.
	gen := s.written.Load()
	flush := gen != s.syncedGen
	errs := make([]error, len(v.writable))
	switch {
	case !flush:
	case len(v.writable) == 1:
		errs[0] = v.writable[0].f.SyncData()
	default:
		var wg sync.WaitGroup
		for i, m := range v.writable {
			wg.Go(func() { errs[i] = m.f.SyncData() })
		}
		wg.Wait()
	}
	var failed []failure
	okInSync := 0
	for i, m := range v.writable {
		if errs[i] == nil && m.r.wbErr != nil {
			errs[i] = fmt.Errorf("write back: %w", m.r.wbErr)
		}
		m.r.wbErr = nil
		if errs[i] != nil {
			failed = append(failed, failure{m.r, fmt.Errorf("sync %s: %w", m.r.path, errs[i])})
			continue
		}
		if flush {
			s.syncs.Add(1)
		}
		if m.r.state == InSync {
			okInSync++
			if uint64(lsn) > m.r.durable.Load() {
				m.r.durable.Store(uint64(lsn))
			}
		}
	}
	s.mu.RUnlock()
	var err error
	if len(failed) > 0 {
		err = s.fail(failed, okInSync > 0)
	} else if okInSync == 0 {
		err = fmt.Errorf("%w: no in-sync replica to sync", ErrNoReplica)
	} else {
		s.syncedGen = gen
	}
	s.dirtyMu.Lock()
	s.syncing = nil
	s.dirtyMu.Unlock()
	if err != nil {
		return err
	}
	return s.ack()
}
