package alloc

import (
	"cmp"
	"fmt"
	"slices"
)

// Reclaiming space. A caller that gives heap space back to the file system
// (hole punching, truncation) or empties sparse segments (moving their
// live extents elsewhere) must keep writers out of the segments it works
// on. It holds them: a held segment has the owner heldOwner, so no cursor
// takes it in a trade or steals it, and no bit is set in it until it is
// released. Free may still clear bits in it (its extents are moved out
// while it is held). A segment can only be held while no cursor owns it.
//
// A segment whose blocks were given back with a hole is marked punched
// when it is released. Trades take a punched segment only when no other
// unowned segment has room for the request (before growing the heap), so
// the holes stay holes while the heap's other space lasts: writing into a
// hole makes the file system allocate again, and a flush of such a write
// commits its journal. The mark is not persisted: after a reopen an empty
// segment is an ordinary one until it is punched again (punching is
// idempotent).

// unowned and heldOwner are the owner values that name no cursor.
const (
	unowned   = -1
	heldOwner = -2
)

// SegmentUsage describes one segment for a caller that picks segments to
// reclaim.
type SegmentUsage struct {
	Index   int  // segment number
	Free    int  // free blocks
	Owned   bool // a cursor owns it (it is being allocated from)
	Held    bool // held by a reclaimer
	Punched bool // given back to the file system and not allocated from since
}

// Usage returns every segment's usage, in segment order. Under concurrent
// use each entry is read at a slightly different moment.
func (a *Allocator) Usage() []SegmentUsage {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	segs := *a.segs.Load()
	out := make([]SegmentUsage, len(segs))
	for i, s := range segs {
		out[i] = SegmentUsage{
			Index:   i,
			Free:    int(s.free.Load()),
			Owned:   s.owner >= 0,
			Held:    s.owner == heldOwner,
			Punched: s.punched,
		}
	}
	return out
}

// Hold takes the segments of idx that no cursor owns, that are not held
// already and exist, out of circulation, and returns them (in the order
// given). A held segment stays allocated-from by no one until Release.
func (a *Allocator) Hold(idx []int) []int {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	segs := *a.segs.Load()
	var held []int
	for _, i := range idx {
		if i < 0 || i >= len(segs) || segs[i].owner != unowned {
			continue
		}
		segs[i].owner = heldOwner
		held = append(held, i)
	}
	return held
}

// HoldEmpty holds every segment that no cursor owns, that is entirely
// free and that is not marked punched, and returns them in increasing
// order.
func (a *Allocator) HoldEmpty() []int {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	segs := *a.segs.Load()
	all := int64(a.g.SegmentBlocks)
	var held []int
	for i, s := range segs {
		if s.owner == unowned && !s.punched && s.free.Load() == all {
			s.owner = heldOwner
			held = append(held, i)
		}
	}
	return held
}

// Release returns held segments to the pool. Those for which punched
// reports true are marked punched if they are still entirely free (no
// block can have been allocated in a held segment, but a caller may pass
// one it did not empty). Release panics on a segment that is not held:
// that is a caller's bug that would break invariant 6.
func (a *Allocator) Release(idx []int, punched func(seg int) bool) {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	segs := *a.segs.Load()
	all := int64(a.g.SegmentBlocks)
	for _, i := range idx {
		s := segs[i]
		if s.owner != heldOwner {
			panic(fmt.Sprintf("alloc: Release of segment %d, which is not held", i))
		}
		s.owner = unowned
		if !s.punched && punched != nil && punched(i) && s.free.Load() == all {
			s.punched = true
			a.punchedCount.Add(1)
		}
	}
}

// MarkPunched marks segment i punched, as Release does, if it exists, no
// cursor owns it, no one holds it and it is entirely free; it reports
// whether the segment is marked punched now. The mark is not part of a
// snapshot: Open calls this for the empty segments whose file space it
// finds given back (heapkv's notePunched), so that trades still take them
// last and Stats still counts them.
func (a *Allocator) MarkPunched(i int) bool {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	segs := *a.segs.Load()
	if i < 0 || i >= len(segs) {
		return false
	}
	s := segs[i]
	if !s.punched && s.owner == unowned && s.free.Load() == int64(a.g.SegmentBlocks) {
		s.punched = true
		a.punchedCount.Add(1)
	}
	return s.punched
}

// IsEmpty reports whether segment i exists and has no allocated block.
func (a *Allocator) IsEmpty(i int) bool {
	segs := *a.segs.Load()
	return i >= 0 && i < len(segs) && segs[i].free.Load() == int64(a.g.SegmentBlocks)
}

// ShrinkTail removes the segments at the end of the heap that no cursor
// owns, that no one holds and that are entirely free, and returns how many
// segments the heap had and has. Before it drops them from the table it
// calls truncate with the new count, holding the pool lock so that no
// trade can grow the heap into the space being cut; if truncate fails the
// table is left as it was and the error is returned. truncate may do I/O:
// trades wait for it (the only place this package holds a lock across a
// caller's I/O; shrinking is rare and on demand).
func (a *Allocator) ShrinkTail(truncate func(segments int) error) (from, to int, err error) {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	segs := *a.segs.Load()
	all := int64(a.g.SegmentBlocks)
	n := len(segs)
	for n > 0 && segs[n-1].owner == unowned && segs[n-1].free.Load() == all {
		n--
	}
	if n == len(segs) {
		return n, n, nil
	}
	if truncate != nil {
		if err := truncate(n); err != nil {
			return len(segs), len(segs), err
		}
	}
	for _, s := range segs[n:] {
		if s.punched {
			a.punchedCount.Add(-1)
		}
	}
	// A new, shorter array: readers that loaded the old table keep a
	// consistent view, and a later growth does not write into it.
	shorter := slices.Clone(segs[:n])
	a.segs.Store(&shorter)
	a.shrinks.Add(int64(len(segs) - n))
	return len(segs), n, nil
}

// SparseSegments returns the segments that no cursor owns, that are not
// held or punched, that hold at least one allocated block and at most
// maxLive of them, from the end of the heap: a compaction that empties
// them in this order moves live extents towards the start, and the end
// can then be cut off.
func (a *Allocator) SparseSegments(maxLive int) []SegmentUsage {
	var out []SegmentUsage
	sb := a.g.SegmentBlocks
	for _, u := range a.Usage() {
		if live := sb - u.Free; !u.Owned && !u.Held && !u.Punched && live > 0 && live <= maxLive {
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(x, y SegmentUsage) int { return cmp.Compare(y.Index, x.Index) })
	return out
}

// DropCursorSegments makes every idle cursor give up its segment, so that
// a reclaimer can hold or cut it; the cursor takes another at its next
// Allocate (a trade). Busy cursors keep theirs.
func (a *Allocator) DropCursorSegments() {
	for i := range a.cursors {
		c := &a.cursors[i]
		if !c.mu.TryLock() {
			continue
		}
		if c.seg >= 0 {
			a.poolMu.Lock()
			a.releaseLocked(c)
			a.poolMu.Unlock()
		}
		c.mu.Unlock()
	}
}

// FreeRuns returns the runs of at least minBlocks free blocks of held
// segment seg, as extents in block order. Blocks freed while it scans may
// or may not be included; none is allocated until seg is released.
func (a *Allocator) FreeRuns(seg, minBlocks int) []Extent {
	segs := *a.segs.Load()
	s := segs[seg]
	a.poolMu.Lock()
	held := s.owner == heldOwner
	a.poolMu.Unlock()
	if !held {
		panic(fmt.Sprintf("alloc: FreeRuns of segment %d, which is not held", seg))
	}
	base := uint64(seg) * uint64(a.g.SegmentBlocks)
	var out []Extent
	for off, n := range s.bits.ClearRuns() {
		if n >= minBlocks {
			out = append(out, Extent{Start: base + uint64(off), Len: uint32(n)})
		}
	}
	return out
}

// HoldFragmented holds every segment that no cursor owns, that is not
// held or punched and that has at least minFree free blocks (entirely
// free ones included), and returns them in increasing order.
func (a *Allocator) HoldFragmented(minFree int) []int {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	var held []int
	for i, s := range *a.segs.Load() {
		if s.owner == unowned && !s.punched && s.free.Load() >= int64(minFree) {
			s.owner = heldOwner
			held = append(held, i)
		}
	}
	return held
}

// SetPreferLow switches trades between the most free segment (false, the
// default: fewest trades) and the lowest-numbered one with half a segment
// free (true): while a compaction moves values out of the end of the
// heap, they then fill the start, and the end can be cut off.
func (a *Allocator) SetPreferLow(on bool) { a.preferLow.Store(on) }

// lowestWithRoom returns the lowest unowned, unpunched segment with at
// least n free blocks and half a segment, or -1. REQUIRES: poolMu. (Half:
// writers share the preference while a compaction runs, and a segment
// with less free space scatters their values over many short runs.)
func (a *Allocator) lowestWithRoom(segs []*segment, n int) int {
	need := int64(max(n, a.g.SegmentBlocks/2))
	for i, s := range segs {
		if s.owner == unowned && !s.punched && s.free.Load() >= need {
			return i
		}
	}
	return -1
}
