package mirror

import (
	"fmt"
	"strings"
)

// Range is a run of whole blocks.
type Range struct {
	Block  uint64
	Blocks int
}

// Verified says what ReadVerified found.
type Verified struct {
	Source     int   // replica whose copy was accepted; -1 if none
	Copies     int   // copies read
	BytesRead  int64 // bytes read, over all copies
	Bad        []int // replicas whose copy could not be read or was rejected
	Unreadable []int // the subset of Bad whose copy could not be read
	Repaired   []int // bad copies rewritten with the accepted one
}

// ReadVerified is the read path that heals: it fills p, whose length must
// be the total size of ranges, with a copy of ranges that check accepts,
// trying the in-sync replicas in order, and rewrites each copy that could
// not be read or that check rejected with the accepted one (never the other
// way round). With all set it reads and checks every in-sync replica (a
// scrub); otherwise it stops at the first good copy. If no copy is
// accepted it returns an error wrapping ErrNoGoodCopy and rewrites nothing.
//
// A repair write that fails makes that replica stale. The caller must
// ensure nothing writes these blocks during the call (heapkv: a published
// extent is immutable while a reader pins it).
func (s *Set) ReadVerified(p []byte, ranges []Range, check func([]byte) bool, all bool) (Verified, error) {
	res := Verified{Source: -1}
	if s.closed.Load() {
		return res, ErrClosed
	}
	total := 0
	for _, rg := range ranges {
		total += rg.Blocks * s.cfg.BlockSize
	}
	if total != len(p) {
		return res, fmt.Errorf("mirror: ReadVerified: buffer of %d bytes for %d bytes of blocks", len(p), total)
	}
	v := s.view.Load()
	var scratch []byte
	var firstErr error
	for _, m := range v.readable {
		if res.Source >= 0 && !all {
			break
		}
		dst := p
		if res.Source >= 0 {
			if scratch == nil {
				scratch = make([]byte, len(p))
			}
			dst = scratch
		}
		res.Copies++
		res.BytesRead += int64(len(p))
		if err := s.readRanges(m, dst, ranges); err != nil {
			res.Bad = append(res.Bad, m.r.id)
			res.Unreadable = append(res.Unreadable, m.r.id)
			m.r.badSeen.Add(1)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if !check(dst) {
			res.Bad = append(res.Bad, m.r.id)
			m.r.badSeen.Add(1)
			continue
		}
		res.Source = m.r.id
	}
	if res.Source < 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d copies read, %d unreadable", res.Copies, len(res.Unreadable))
		if firstErr != nil {
			fmt.Fprintf(&b, " (first: %v)", firstErr)
		}
		return res, fmt.Errorf("%w of blocks %v: %s", ErrNoGoodCopy, ranges, b.String())
	}
	for _, id := range res.Bad {
		if s.repair(s.replicas[id], p, ranges) {
			res.Repaired = append(res.Repaired, id)
		}
	}
	return res, nil
}

func (s *Set) readRanges(m member, p []byte, ranges []Range) error {
	off := 0
	for _, rg := range ranges {
		n := rg.Blocks * s.cfg.BlockSize
		if err := s.readFrom(m, p[off:off+n], rg.Block); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// repair rewrites ranges on in-sync replica r with p; it reports whether it
// did. A failed write makes r stale.
func (s *Set) repair(r *replica, p []byte, ranges []Range) bool {
	if s.cfg.ReadOnly {
		return false
	}
	s.mu.RLock()
	if r.state != InSync || r.f == nil {
		s.mu.RUnlock()
		return false
	}
	f := r.f
	off := 0
	var err error
	for _, rg := range ranges {
		n := rg.Blocks * s.cfg.BlockSize
		_, werr := f.WriteAt(p[off:off+n], s.offset(rg.Block))
		s.written.Add(1)
		if werr != nil {
			err = fmt.Errorf("repair %d blocks at block %d of %s: %w", rg.Blocks, rg.Block, r.path, werr)
			break
		}
		if len(s.replicas) > 1 {
			s.noteDirty(rg.Block, rg.Blocks)
		}
		off += n
	}
	s.mu.RUnlock()
	if err != nil {
		s.fail([]failure{{r, err}}, true)
		return false
	}
	r.repairs.Add(1)
	s.cfg.Logger.Warn("repaired a bad copy on a heap replica", "replica", r.id, "ranges", fmt.Sprint(ranges))
	return true
}
