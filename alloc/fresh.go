package alloc

// Claims in empty segments, in the order they are made.
//
// Allocate puts a claim wherever its cursor finds room: after the
// cursor's last claim if it fits there, else in the shortest run that
// holds it, in whichever segment the cursor traded for. Values written one
// after another so end up wherever values freed before them were. A
// caller that writes values in an order worth keeping (heapkv's Compact
// with CompactOptions.Cluster rewrites them in key order, so that a range
// scan reads neighbouring keys' values from neighbouring blocks) uses
// AllocateFresh instead: it claims from a cursor of its own, one that
// Allocate and AllocatePreferring never take, and that cursor trades only
// for an empty segment (the lowest-numbered, punched ones included) or a
// new one, never for one partly used. Consecutive claims therefore sit in
// consecutive blocks, except where a segment's last blocks are too few for
// the next claim, or a free in the cursor's segment left a hole that fits
// it. Only a heap at MaxSegments without an empty segment makes the cursor
// trade as the others do.

// AllocateFresh claims nblocks free blocks right after the previous
// AllocateFresh claim if they fit there, else at the start of an empty or
// new segment (see above). Otherwise it is Allocate: the result is
// unpublished until Publish or Abort. Concurrent callers take turns on the
// one cursor, and their claims interleave.
func (a *Allocator) AllocateFresh(nblocks int) (Claim, error) {
	return a.allocate(a.freshCursor(), nblocks)
}

// freshCursor is the index of AllocateFresh's cursor: the last one, past
// the Config.Cursors that acquire and AllocatePreferring choose from.
func (a *Allocator) freshCursor() int { return len(a.cursors) - 1 }

// tradeFreshLocked gives cursor ci (AllocateFresh's) the lowest unowned
// empty segment, else a new one, and reports whether it did; at
// MaxSegments without an empty segment it changes nothing and reports
// false. REQUIRES: cursor ci's mu, poolMu; ci owns no segment.
func (a *Allocator) tradeFreshLocked(ci int) bool {
	segs := *a.segs.Load()
	all := int64(a.g.SegmentBlocks)
	for i, s := range segs {
		if s.owner == unowned && s.free.Load() == all {
			a.assignLocked(ci, i)
			return true
		}
	}
	if a.cfg.MaxSegments > 0 && len(segs) >= a.cfg.MaxSegments {
		return false
	}
	a.growLocked(ci)
	return true
}
