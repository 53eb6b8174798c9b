package alloc

import "sort"

// A cursor's list of its segment's free runs. Every search a claim makes
// in its cursor's segment (where it fits: fitRun; the runs a scattered
// claim is spread over) reads this list instead of the bitmap.
// A search of the bitmap walks every word between the runs it finds: 1,024
// words for a segment of 65,536 blocks of 128 bytes, and a claim that did
// not fit searched the segment up to six times. A search of the list
// passes over the runs alone, and the bitmap is walked once, when the
// list is built (BENCHMARKS.md, "Free runs listed per cursor").
//
// The list is exact. Only the owner sets bits in its segment (invariant 6),
// and it updates the list as it does. Anyone else who changes a segment's
// bits (Free, Abort, MarkAllocated, MarkFree) bumps the segment's gen after
// the change, and the owner scans the bitmap again before its next search
// if gen has moved since its last scan. The owner reads gen before it
// scans, so a change it misses leaves gen ahead of the value it keeps.

// freeRun is a run of free blocks of a segment: [off, off+n).
type freeRun struct{ off, n int32 }

// freeRuns is the list of one segment's free runs kept by the cursor that
// owns it. Guarded by the cursor's mu.
type freeRuns struct {
	seg  *segment // the segment listed; nil before the first scan
	gen  uint64   // seg.gen read before the scan
	runs []freeRun
}

// own makes segment seg the cursor's, with its hint (where a claim that
// fits continues the last one) at the segment's start. The list of free
// runs is dropped: another cursor may have owned seg since this one
// listed it. REQUIRES: c.mu, Allocator.poolMu.
func (c *cursor) own(seg int) {
	c.seg, c.hint = seg, 0
	c.free.seg = nil
}

// runsLocked returns the free runs of cursor c's segment s in address
// order, scanning the bitmap if the list is not of s or s changed since.
// The slice is valid until the next take. REQUIRES: c.mu, c owns s.
func (c *cursor) runsLocked(s *segment) []freeRun {
	fr := &c.free
	if g := s.gen.Load(); fr.seg != s || fr.gen != g {
		fr.seg, fr.gen, fr.runs = s, g, fr.runs[:0]
		for off, n := range s.bits.ClearRuns() {
			fr.runs = append(fr.runs, freeRun{int32(off), int32(n)})
		}
	}
	return fr.runs
}

// longestRun returns the length of the longest of runs, 0 if none.
func longestRun(runs []freeRun) int32 {
	var m int32
	for _, r := range runs {
		m = max(m, r.n)
	}
	return m
}

// fitRun returns where a claim of n blocks goes among runs, or -1 if no
// run holds n blocks. If the run that holds block from has n free blocks
// from there, the claim goes at from: it continues the cursor's last
// claim, so a writer that keeps to one cursor gets adjacent blocks and
// can write them with one call. Otherwise it goes at the start of the
// shortest run that holds it, the lowest of equals (best fit): the holes
// that frees leave are filled by claims of their size, and long runs
// stay long for the claims that need them. Next fit over the whole
// segment, as before refinement 47, cut long runs for short claims while
// holes of the right size stayed empty: in the allocator benchmark
// log-normal claims traded segments 3.7 times as often and the heap held
// 3% more.
func fitRun(runs []freeRun, from, n int) int {
	i := sort.Search(len(runs), func(i int) bool { return int(runs[i].off+runs[i].n) > from })
	if i < len(runs) && int(runs[i].off) <= from && int(runs[i].off+runs[i].n)-from >= n {
		return from
	}
	best := -1
	for j, r := range runs {
		if int(r.n) >= n && (best < 0 || r.n < runs[best].n) {
			if best = j; int(r.n) == n {
				break
			}
		}
	}
	if best < 0 {
		return -1
	}
	return int(runs[best].off)
}

// tookLocked removes [off, off+n), which lies inside one listed run, from
// the list. REQUIRES: c.mu, the list is of c's segment.
func (c *cursor) tookLocked(off, n int) {
	runs := c.free.runs
	i := sort.Search(len(runs), func(i int) bool { return int(runs[i].off+runs[i].n) > off })
	r := runs[i]
	left := freeRun{r.off, int32(off) - r.off}
	right := freeRun{int32(off + n), r.off + r.n - int32(off+n)}
	switch {
	case left.n > 0 && right.n > 0:
		runs = append(runs, freeRun{})
		copy(runs[i+2:], runs[i+1:])
		runs[i], runs[i+1] = left, right
	case left.n > 0:
		runs[i] = left
	case right.n > 0:
		runs[i] = right
	default:
		runs = append(runs[:i], runs[i+1:]...)
	}
	c.free.runs = runs
}
