package mirror

import (
	"errors"
	"fmt"
)

// Space given back to the file system. The caller (heapkv's Compact)
// passes only blocks that are free and that no one reads or writes while
// the call runs: the allocator holds them (alloc.Allocator.Hold). Neither
// call changes what any allocated block holds, so a replica that fails one
// does not go stale, and neither is made durable: a hole or a cut lost in a
// crash leaves free blocks holding old bytes, which nothing reads.
//
// Both need the file's descriptor (the operating system's file system);
// on a file without one (MemFS) they return an error wrapping
// errors.ErrUnsupported, as they do where the platform or the file system
// cannot punch holes.

// PunchHole gives back the file space of blocks [block, block+n) on every
// writable replica; reads of them return zeros afterwards. It tries every
// replica and returns their errors joined.
func (s *Set) PunchHole(block uint64, n int) error {
	if n <= 0 {
		return nil
	}
	return s.eachWritable(func(m member) error {
		off, length := s.offset(block), int64(n)*int64(s.cfg.BlockSize)
		if err := punchHole(m.f, off, length); err != nil {
			return fmt.Errorf("mirror: punch %d blocks at block %d of %s: %w", n, block, m.r.path, err)
		}
		return nil
	})
}

// Truncate cuts every writable replica's file that holds more than blocks
// blocks down to that many (the header area stays).
func (s *Set) Truncate(blocks uint64) error {
	size := s.offset(blocks)
	return s.eachWritable(func(m member) error {
		fi, err := m.f.Stat()
		if err != nil {
			return fmt.Errorf("mirror: stat %s: %w", m.r.path, err)
		}
		if fi.Size() <= size {
			return nil
		}
		if err := truncateFile(m.f, size); err != nil {
			return fmt.Errorf("mirror: truncate %s to %d blocks: %w", m.r.path, blocks, err)
		}
		return nil
	})
}

// SpaceUsed returns the size of the first in-sync replica's file and the
// bytes the file system has allocated to it (which holes and a sparse
// tail make smaller). allocated is -1 where the platform cannot tell.
func (s *Set) SpaceUsed() (size, allocated int64, err error) {
	if s.closed.Load() {
		return 0, 0, ErrClosed
	}
	v := s.view.Load()
	if len(v.readable) == 0 {
		return 0, 0, ErrNoReplica
	}
	m := v.readable[0]
	fi, err := m.f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("mirror: stat %s: %w", m.r.path, err)
	}
	return fi.Size(), allocatedBytes(m.f), nil
}

// IsHole reports whether blocks [block, block+n) of the first in-sync
// replica's file hold no data: a hole that PunchHole made, or a sparse
// region never written. Where the platform or the file cannot tell
// (MemFS), it returns an error wrapping errors.ErrUnsupported.
func (s *Set) IsHole(block uint64, n int) (bool, error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	v := s.view.Load()
	if len(v.readable) == 0 {
		return false, ErrNoReplica
	}
	m := v.readable[0]
	off, length := s.offset(block), int64(n)*int64(s.cfg.BlockSize)
	hole, err := isHole(m.f, off, length)
	if err != nil {
		return false, fmt.Errorf("mirror: look for data in %d blocks at block %d of %s: %w", n, block, m.r.path, err)
	}
	return hole, nil
}

// eachWritable calls fn for every writable replica, holding s.mu shared
// (as a write does), and joins the errors.
func (s *Set) eachWritable(fn func(m member) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.cfg.ReadOnly {
		return fmt.Errorf("mirror: read-only: %w", errors.ErrUnsupported)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var errs []error
	for _, m := range s.view.Load().writable {
		errs = append(errs, fn(m))
	}
	return errors.Join(errs...)
}
