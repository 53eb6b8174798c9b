package alloc

import (
	"fmt"

	"github.com/heapkv/heapkv/internal/bitmap"
)

// MarkAllocated redoes an allocation found in the log: it sets the bits of e,
// growing the heap to include e's segment if needed. It returns an error
// wrapping ErrCorrupt, and changes nothing, if e does not fit the geometry,
// lies beyond Config.MaxSegments (when that is set), or any block of e is
// already allocated.
//
// Only MaxSegments bounds the growth. With MaxSegments 0 (no limit; heapkv
// sets none) an extent that passes every other check but names a far
// segment grows the heap to that segment: memory in proportion to the
// segment number (a bitmap of SegmentBlocks bits per segment), up to the
// sanity limit of 1<<40 segments, which is far beyond any memory. A caller
// that wants a damaged but checksummed log record to fail cleanly instead
// must set MaxSegments to the most segments its heap can have.
//
// MarkAllocated and MarkFree are for recovery: call them from one goroutine,
// before any Allocate (they set bits in segments no cursor owns yet).
func (a *Allocator) MarkAllocated(e Extent) error {
	if err := a.g.CheckExtent(e); err != nil {
		return fmt.Errorf("alloc: mark allocated: %w", err)
	}
	si, off := a.g.locate(e)
	if max := a.cfg.MaxSegments; max > 0 && si >= uint64(max) {
		return fmt.Errorf("%w: mark allocated %v: segment %d is beyond the maximum of %d segments",
			ErrCorrupt, e, si, max)
	}
	// Guard the int conversion below. This keeps the arithmetic sound; it
	// does not bound memory (see above).
	if si >= 1<<40 {
		return fmt.Errorf("%w: mark allocated %v: segment %d is absurdly far", ErrCorrupt, e, si)
	}
	a.growTo(int(si) + 1)
	s := (*a.segs.Load())[si]
	if j := s.bits.NextSet(off); j >= 0 && j < off+int(e.Len) {
		return fmt.Errorf("%w: mark allocated %v: block %d is already allocated",
			ErrCorrupt, e, si*uint64(a.g.SegmentBlocks)+uint64(j))
	}
	s.free.Add(-int64(e.Len))
	s.freedMu.Lock()
	s.bits.SetRange(off, int(e.Len))
	s.markStaleLocked()
	s.freedMu.Unlock()
	s.longest.Store(-1) // no longer a lower bound
	return nil
}

// MarkFree redoes a free found in the log: it clears the bits of e. It
// returns an error wrapping ErrCorrupt, and changes nothing, if e does not
// fit the geometry, lies beyond the heap, or any block of e is not allocated.
// See MarkAllocated for when it may be called.
func (a *Allocator) MarkFree(e Extent) error {
	if err := a.CheckExtent(e); err != nil {
		return fmt.Errorf("alloc: mark free: %w", err)
	}
	si, off := a.g.locate(e)
	s := (*a.segs.Load())[si]
	if j := s.bits.NextClear(off); j >= 0 && j < off+int(e.Len) {
		return fmt.Errorf("%w: mark free %v: block %d is not allocated",
			ErrCorrupt, e, si*uint64(a.g.SegmentBlocks)+uint64(j))
	}
	s.freedMu.Lock()
	s.bits.ClearRange(off, int(e.Len))
	s.markStaleLocked()
	s.freedMu.Unlock()
	s.free.Add(int64(e.Len))
	return nil
}

// growTo grows the heap to at least n segments; they start unowned and empty.
func (a *Allocator) growTo(n int) {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	segs := *a.segs.Load()
	if len(segs) >= n {
		return
	}
	for len(segs) < n {
		segs = append(segs, newSegment(bitmap.New(a.g.SegmentBlocks)))
	}
	a.segs.Store(&segs)
}

// newSegment returns an unowned segment with bitmap b.
func newSegment(b *bitmap.Bitmap) *segment {
	s := &segment{bits: b, owner: -1}
	s.free.Store(int64(b.Len() - b.Count()))
	s.longest.Store(-1)
	return s
}
