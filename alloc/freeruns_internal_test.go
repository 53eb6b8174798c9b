package alloc

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestFreeRunsListMatchesBitmap drives an allocator through random claims
// (from preferred cursors, so lists go stale by trades and steals), frees
// and aborts, with MaxSegments low enough for steals and scattering over
// short runs, and checks after every step that each cursor whose list is
// current (same segment, same gen) lists exactly its segment's clear runs.
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
			segs := *a.segs.Load()
			for ci := range a.cursors {
				c := &a.cursors[ci]
				if c.seg < 0 || c.free.seg != segs[c.seg] || c.free.gen != segs[c.seg].gen.Load() {
					continue
				}
				var want []freeRun
				for off, n := range segs[c.seg].bits.ClearRuns() {
					want = append(want, freeRun{int32(off), int32(n)})
				}
				if !slices.Equal(want, c.free.runs) {
					t.Fatalf("step %d, cursor %d, segment %d: list %v, bitmap's runs %v", step, ci, c.seg, c.free.runs, want)
				}
				checked++
			}
		}
		st := a.Stats()
		t.Logf("block %d: %d lists checked, %d trades, %d segments", g.BlockSize, checked, st.CursorTrades, st.Segments)
		if checked < 10000 {
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
