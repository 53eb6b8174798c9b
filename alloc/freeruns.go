package alloc

import (
	"slices"
	"sort"
)

// A segment's list of its free runs. Every search a claim makes in its
// cursor's segment (where it fits: fitRun; the runs a scattered claim is
// spread over) reads this list instead of the bitmap. A search of the
// bitmap walks every word between the runs it finds: 1,024 words for a
// segment of 65,536 blocks of 128 bytes, and a claim that did not fit
// searched the segment up to six times. A search of the list passes over
// the runs alone (BENCHMARKS.md, "Free runs listed per cursor").
//
// The list belongs to the segment and is read and changed only by the
// cursor that owns it, under that cursor's mu; it stays with the segment
// when the cursor gives it up, so the next owner does not walk the bitmap
// again. Only the owner sets bits in its segment (invariant 6), and it
// updates the list as it does. Everyone else who clears bits (Free, Abort)
// does so under the segment's freedMu and notes the run cleared in
// segment.freed; the owner merges the noted runs into the list before its
// next search. Clearing and noting under one lock is what keeps the list
// exact: the owner, holding freedMu while it merges (or walks the bitmap),
// sees every free either whole (bits clear and noted) or not at all, so it
// never lists as free a block another free has not yet cleared, nor misses
// one it cleared. When more runs are noted than maxFreed (a segment nobody
// owned for a long while), or recovery set or cleared bits (MarkAllocated,
// MarkFree), the segment is marked stale and its next owner walks the
// bitmap once. segment.gen counts the frees noted, so an owner whose list
// is current sees it with one atomic load and takes no lock.
//
// Before refinement 60 the list was the cursor's: every trade (0.76 of the
// claims replacing values of 100 B-64 KiB) and every free anywhere in the
// segment made the next claim walk the bitmap, 3.6% of the CPU of YCSB A
// with such values (BENCHMARKS.md, "A segment keeps its list of free
// runs").

// maxFreed is how many runs freed by others a segment notes for its owner
// before it marks the list stale instead.
const maxFreed = 256

// freeRun is a run of free blocks of a segment: [off, off+n).
type freeRun struct{ off, n int32 }

// freeRuns is a segment's list of free runs in address order. Guarded by
// the mu of the cursor that owns the segment; listed is also written only
// under the segment's freedMu, so frees may read it there.
type freeRuns struct {
	listed bool   // runs is built; false for a new or restored segment
	gen    uint64 // segment.gen when the noted frees were last merged
	runs   []freeRun
}

// noteFreedLocked records that [off, off+n) was just cleared by someone
// other than the owner. REQUIRES: s.freedMu.
func (s *segment) noteFreedLocked(off, n int) {
	switch {
	case !s.runs.listed || s.stale:
	case len(s.freed) >= maxFreed:
		s.stale, s.freed = true, s.freed[:0]
	default:
		s.freed = append(s.freed, freeRun{int32(off), int32(n)})
	}
	s.gen.Add(1)
}

// markStaleLocked makes the next owner build the list from the bitmap
// (recovery changed bits without noting them). REQUIRES: s.freedMu.
func (s *segment) markStaleLocked() {
	s.stale, s.freed = true, s.freed[:0]
	s.gen.Add(1)
}

// runsLocked returns the free runs of segment s in address order: the
// list, with the runs others freed since the last call merged in, or
// built from the bitmap if s was never listed or is stale. The slice is
// valid until the next take. REQUIRES: the mu of the cursor that owns s.
func (s *segment) runsLocked() []freeRun {
	fr := &s.runs
	if fr.listed && fr.gen == s.gen.Load() {
		return fr.runs
	}
	s.freedMu.Lock()
	defer s.freedMu.Unlock()
	if !fr.listed || s.stale {
		fr.runs = fr.runs[:0]
		for off, n := range s.bits.ClearRuns() {
			fr.runs = append(fr.runs, freeRun{int32(off), int32(n)})
		}
		fr.listed, s.stale = true, false
	} else {
		for _, r := range s.freed {
			fr.runs = mergeRun(fr.runs, r)
		}
	}
	s.freed = s.freed[:0]
	fr.gen = s.gen.Load()
	return fr.runs
}

// mergeRun adds the free run r to runs (address order, no two touching)
// and returns the list, r joined with every run it overlaps or touches. A
// run freed twice (a double free) overlaps itself and changes nothing.
func mergeRun(runs []freeRun, r freeRun) []freeRun {
	lo, hi := r.off, r.off+r.n
	// i: the first run that ends at or after lo; j: the first that starts
	// after hi. Runs i..j-1 overlap or touch r.
	i := sort.Search(len(runs), func(i int) bool { return runs[i].off+runs[i].n >= lo })
	j := i
	for j < len(runs) && runs[j].off <= hi {
		lo, hi = min(lo, runs[j].off), max(hi, runs[j].off+runs[j].n)
		j++
	}
	m := freeRun{lo, hi - lo}
	if i == j {
		return slices.Insert(runs, i, m)
	}
	runs[i] = m
	return slices.Delete(runs, i+1, j)
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
// the list. REQUIRES: the mu of the cursor that owns s.
func (s *segment) tookLocked(off, n int) {
	runs := s.runs.runs
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
	s.runs.runs = runs
}
