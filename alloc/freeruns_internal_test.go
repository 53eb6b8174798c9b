package alloc

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// TestFreeRunsListMatchesBitmap drives an allocator through random claims
// (from preferred cursors, so segments change owners by trades and
// steals), frees and aborts, with MaxSegments low enough for steals and
// scattering over short runs, and checks after every step that every
// listed segment's list, with the runs noted since merged in, is exactly
// its bitmap's clear runs, and that a current list (same gen) needs no
// merge.
func TestFreeRunsListMatchesBitmap(t *testing.T) {
	for _, g := range []Geometry{{BlockSize: 128, SegmentBlocks: 256}, {BlockSize: 4096, SegmentBlocks: 64}} {
		a, err := New(g, Config{Cursors: 3, MaxSegments: 6})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(uint64(g.BlockSize), 9))
		var live [][]Extent
		checked := 0
		for step := range 20000 {
			switch op := r.IntN(10); {
			case op < 7:
				c, err := a.AllocatePreferring(r.IntN(3), 1+r.IntN(g.SegmentBlocks/3))
				if err != nil {
					continue // ErrFull: the heap is at MaxSegments
				}
				if r.IntN(8) == 0 {
					a.Abort(c)
					continue
				}
				a.Publish(c)
				live = append(live, c.Extents)
			case len(live) > 0:
				i := r.IntN(len(live))
				for _, e := range live[i] {
					a.Free(e)
				}
				live[i] = live[len(live)-1]
				live = live[:len(live)-1]
			}
			checked += checkLists(t, a, step)
		}
		st := a.Stats()
		t.Logf("block %d: %d lists checked, %d trades, %d segments", g.BlockSize, checked, st.CursorTrades, st.Segments)
		if checked < 20000 {
			t.Errorf("only %d lists were current when checked", checked)
		}
	}
}

// TestFitRun: a claim continues at from when the run holding from has
// room there; otherwise it takes the shortest run that holds it, the
// lowest of equals; -1 when none does.
func TestFitRun(t *testing.T) {
	runs := []freeRun{{0, 10}, {20, 4}, {30, 6}, {40, 4}, {50, 14}}
	for _, tc := range []struct{ from, n, want int }{
		{2, 5, 2},   // continues the last claim inside the run at 0
		{7, 5, 30},  // 3 blocks left at 7: the shortest run of 5 is the 6 at 30
		{64, 4, 20}, // nothing at 64: an exact fit, the lower of two
		{64, 5, 30}, // first fit would take the run at 0
		{60, 7, 0},  // the shortest run of 7 is the 10 at 0
		{21, 3, 21}, // continues inside the run at 20
		{60, 11, 50},
		{0, 15, -1},
	} {
		if got := fitRun(runs, tc.from, tc.n); got != tc.want {
			t.Errorf("fitRun(from %d, n %d) = %d, want %d", tc.from, tc.n, got, tc.want)
		}
	}
	if got := fitRun(nil, 0, 1); got != -1 {
		t.Errorf("fitRun of no runs = %d, want -1", got)
	}
}

// checkLists checks every listed, not stale segment of a (see
// TestFreeRunsListMatchesBitmap) and returns how many it checked. No
// claim or free may run concurrently.
func checkLists(t *testing.T, a *Allocator, step int) int {
	t.Helper()
	checked := 0
	for si, s := range *a.segs.Load() {
		if !s.runs.listed || s.stale {
			continue
		}
		got := slices.Clone(s.runs.runs)
		if s.runs.gen == s.gen.Load() && len(s.freed) != 0 {
			t.Fatalf("step %d, segment %d: list current at gen %d but %d runs noted", step, si, s.runs.gen, len(s.freed))
		}
		for _, r := range s.freed {
			got = mergeRun(got, r)
		}
		var want []freeRun
		for off, n := range s.bits.ClearRuns() {
			want = append(want, freeRun{int32(off), int32(n)})
		}
		if !slices.Equal(want, got) {
			t.Fatalf("step %d, segment %d (owner %d): list %v with noted %v, bitmap's runs %v",
				step, si, s.owner, s.runs.runs, s.freed, want)
		}
		checked++
	}
	return checked
}

// TestMergeRun: a freed run joins the runs it overlaps or touches, and is
// inserted in address order otherwise.
func TestMergeRun(t *testing.T) {
	for _, tc := range []struct {
		runs []freeRun
		r    freeRun
		want []freeRun
	}{
		{nil, freeRun{5, 3}, []freeRun{{5, 3}}},
		{[]freeRun{{0, 2}, {10, 2}}, freeRun{5, 2}, []freeRun{{0, 2}, {5, 2}, {10, 2}}},
		{[]freeRun{{0, 2}, {10, 2}}, freeRun{2, 3}, []freeRun{{0, 5}, {10, 2}}}, // touches the left
		{[]freeRun{{0, 2}, {10, 2}}, freeRun{7, 3}, []freeRun{{0, 2}, {7, 5}}},  // touches the right
		{[]freeRun{{0, 2}, {10, 2}}, freeRun{2, 8}, []freeRun{{0, 12}}},         // joins both
		{[]freeRun{{0, 2}, {4, 1}, {6, 1}, {10, 2}}, freeRun{1, 10}, []freeRun{{0, 12}}},
		{[]freeRun{{0, 4}}, freeRun{1, 2}, []freeRun{{0, 4}}}, // freed twice
		{[]freeRun{{3, 4}}, freeRun{0, 1}, []freeRun{{0, 1}, {3, 4}}},
		{[]freeRun{{3, 4}}, freeRun{9, 1}, []freeRun{{3, 4}, {9, 1}}},
	} {
		got := mergeRun(slices.Clone(tc.runs), tc.r)
		if !slices.Equal(got, tc.want) {
			t.Errorf("mergeRun(%v, %v) = %v, want %v", tc.runs, tc.r, got, tc.want)
		}
	}
}

// TestFreeRunsConcurrentFrees has one goroutine claim from cursors while
// two others free what it claimed a little later, in every segment, and
// checks at the end (and at pauses along the way) that each listed
// segment's list, once its owner merged the noted runs, is exactly its
// bitmap's clear runs: no block listed free that a claim could then find
// set (takeLocked would panic), none missing. Run it with -race.
func TestFreeRunsConcurrentFrees(t *testing.T) {
	g := Geometry{BlockSize: 128, SegmentBlocks: 512}
	a, err := New(g, Config{Cursors: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 40 {
		frees := make(chan []Extent, 64)
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for exts := range frees {
					for _, e := range exts {
						a.Free(e)
					}
				}
			}()
		}
		var kept [][]Extent
		for range 500 {
			c, err := a.AllocatePreferring(r.IntN(2), 1+r.IntN(40))
			if err != nil {
				t.Fatal(err)
			}
			a.Publish(c)
			if r.IntN(3) == 0 {
				kept = append(kept, c.Extents)
			} else {
				frees <- c.Extents
			}
		}
		close(frees)
		wg.Wait()
		for _, exts := range kept[:len(kept)/2] {
			for _, e := range exts {
				a.Free(e)
			}
		}
		if checkLists(t, a, round) == 0 {
			t.Fatalf("round %d: no segment listed to check", round)
		}
	}
	if st := a.Stats(); st.DoubleFreeBlocks != 0 {
		t.Errorf("%d blocks freed twice", st.DoubleFreeBlocks)
	}
}
