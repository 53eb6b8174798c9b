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
