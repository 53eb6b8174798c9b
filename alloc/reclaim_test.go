package alloc_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heapkv/heapkv/alloc"
)

// fillSegments allocates whole segments with one cursor until the heap has
// n segments, and returns one claim per segment.
func fillSegments(t *testing.T, a *alloc.Allocator, n int) []alloc.Claim {
	t.Helper()
	sb := a.Geometry().SegmentBlocks
	var cs []alloc.Claim
	for a.Segments() < n || len(cs) < n {
		c := mustAllocate(t, a, sb)
		a.Publish(c)
		cs = append(cs, c)
	}
	return cs
}

// takeSegments makes n claims of a whole segment each and returns the
// segments they landed in, in order.
func takeSegments(t *testing.T, a *alloc.Allocator, n int) []int {
	t.Helper()
	var order []int
	for range n {
		c := mustAllocate(t, a, a.Geometry().SegmentBlocks)
		a.Publish(c)
		order = append(order, segOf(a, c.Extents[0]))
	}
	return order
}

func segOf(a *alloc.Allocator, e alloc.Extent) int {
	return int(e.Start / uint64(a.Geometry().SegmentBlocks))
}

func TestHoldKeepsWritersOut(t *testing.T) {
	g := alloc.Geometry{BlockSize: 4096, SegmentBlocks: 64}
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	cs := fillSegments(t, a, 4)
	// Empty segments 1 and 2; hold 2 only.
	a.Free(cs[1].Extents[0])
	a.Free(cs[2].Extents[0])
	held := a.Hold([]int{2, 7, -1})
	eq(t, []int{2}, held, "Hold of a segment, one past the heap, one negative")
	eq(t, 0, len(a.Hold([]int{2})), "Hold of a held segment")
	// Two segments' worth of single blocks: segment 1 takes 64, then the
	// heap must grow rather than use held segment 2.
	for range 2 * g.SegmentBlocks {
		c := mustAllocate(t, a, 1)
		if s := segOf(a, c.Extents[0]); s == 2 {
			t.Fatalf("allocated %v in held segment 2", c.Extents[0])
		}
		a.Publish(c)
	}
	eq(t, 5, a.Segments(), "segments after filling segment 1 and one more")
	u := a.Usage()
	eq(t, true, u[2].Held, "segment 2 held")
	eq(t, g.SegmentBlocks, u[2].Free, "segment 2 free")
	if !panics(func() { a.Release([]int{1}, nil) }) {
		t.Fatal("Release of a segment that is not held did not panic")
	}
	a.Release(held, nil)
	eq(t, false, a.Usage()[2].Held, "segment 2 released")
}

func TestPunchedSegmentsAreTakenLast(t *testing.T) {
	g := alloc.Geometry{BlockSize: 4096, SegmentBlocks: 64}
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	cs := fillSegments(t, a, 6)
	for _, i := range []int{1, 3, 4} {
		a.Free(cs[i].Extents[0])
	}
	held := a.HoldEmpty()
	eq(t, []int{1, 3, 4}, held, "HoldEmpty")
	a.Release(held, func(seg int) bool { return seg != 3 }) // 3 was not punched
	st := a.Stats()
	eq(t, 2, st.PunchedSegments, "punched segments")
	eq(t, 3, st.EmptySegments, "empty segments")
	// Unpunched segment 3 first, then the lowest punched (1), then 4, then growth.
	eq(t, []int{3, 1, 4, 6}, takeSegments(t, a, 4), "segments taken, in order")
	eq(t, 0, a.Stats().PunchedSegments, "punched segments once all were taken")
}

// TestMarkPunched: MarkPunched marks only an empty segment no one owns or
// holds, counts it once, and such a segment is then taken last, as one
// Release marked.
func TestMarkPunched(t *testing.T) {
	g := alloc.Geometry{BlockSize: 4096, SegmentBlocks: 64}
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	cs := fillSegments(t, a, 6) // the cursor owns segment 5
	for _, i := range []int{1, 2, 3, 5} {
		a.Free(cs[i].Extents[0])
	}
	held := a.Hold([]int{3})
	for _, c := range []struct {
		seg  int
		want bool
		why  string
	}{
		{0, false, "a full segment"}, {1, true, "an empty segment"}, {1, true, "the same again"},
		{2, true, "another empty one"}, {3, false, "a held segment"}, {5, false, "the cursor's segment"},
		{6, false, "past the heap"}, {-1, false, "a negative index"},
	} {
		eq(t, c.want, a.MarkPunched(c.seg), "MarkPunched of %s", c.why)
	}
	eq(t, 2, a.Stats().PunchedSegments, "punched segments")
	a.Release(held, nil)
	// Unpunched segment 3 first (after the cursor's own 5), then 1 and 2.
	eq(t, []int{5, 3, 1, 2}, takeSegments(t, a, 4), "segments taken, in order")
	eq(t, 0, a.Stats().PunchedSegments, "punched segments once taken")
}

func TestShrinkTail(t *testing.T) {
	g := alloc.Geometry{BlockSize: 4096, SegmentBlocks: 64}
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	cs := fillSegments(t, a, 6) // the cursor owns segment 5
	a.Free(cs[2].Extents[0])
	a.Free(cs[4].Extents[0])
	c2 := mustAllocate(t, a, g.SegmentBlocks) // the cursor trades into segment 2
	a.Publish(c2)
	eq(t, 2, segOf(a, c2.Extents[0]), "segment of the claim after freeing 2 and 4")
	a.Free(cs[5].Extents[0])
	held := a.Hold([]int{5})
	eq(t, []int{5}, held, "Hold(5)")
	from, to, err := a.ShrinkTail(func(int) error { t.Fatal("truncate called with a held tail"); return nil })
	noErr(t, err)
	eq(t, [2]int{6, 6}, [2]int{from, to}, "a held last segment stops the shrink")
	a.Release(held, nil)

	boom := errors.New("boom")
	_, _, err = a.ShrinkTail(func(n int) error { return boom })
	wantErr(t, err, boom, "failing truncate")
	eq(t, 6, a.Segments(), "segments after a failed truncate")

	var cut int
	from, to, err = a.ShrinkTail(func(n int) error { cut = n; return nil })
	noErr(t, err)
	eq(t, [3]int{6, 4, 4}, [3]int{from, to, cut}, "from, to, truncate's count")
	eq(t, int64(2), a.Stats().Shrinks, "Shrinks")
	wantErr(t, a.CheckExtent(alloc.Extent{Start: 4 * 64, Len: 1}), alloc.ErrCorrupt, "extent in a cut segment")
	c := mustAllocate(t, a, g.SegmentBlocks)
	eq(t, 4, segOf(a, c.Extents[0]), "the heap grows into the cut space")
	eq(t, 5, a.Segments(), "segments after growing again")
}

func TestSparseSegments(t *testing.T) {
	g := alloc.Geometry{BlockSize: 4096, SegmentBlocks: 64}
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	var small []alloc.Claim
	for range 4 * 64 {
		c := mustAllocate(t, a, 1)
		a.Publish(c)
		small = append(small, c)
	}
	mustAllocate(t, a, 64) // the cursor moves to segment 4
	// Keep 10 blocks of segment 0, 40 of segment 1, 0 of 2, all of 3.
	for i, c := range small {
		seg, off := i/64, i%64
		if (seg == 0 && off >= 10) || (seg == 1 && off >= 40) || seg == 2 {
			a.Free(c.Extents[0])
		}
	}
	var got []int
	for _, u := range a.SparseSegments(32) {
		got = append(got, u.Index)
	}
	eq(t, []int{0}, got, "at most 32 live blocks")
	got = got[:0]
	for _, u := range a.SparseSegments(64) {
		got = append(got, u.Index)
	}
	eq(t, []int{3, 1, 0}, got, "at most 64 live blocks, from the end (the owned one left out)")
}

// TestHoldUnderAllocation runs allocating writers against a reclaimer that
// holds, releases and shrinks, and checks that no block is ever handed out
// in a held segment or beyond a cut.
func TestHoldUnderAllocation(t *testing.T) {
	g := alloc.Geometry{BlockSize: 4096, SegmentBlocks: 64}
	a := newAlloc(t, g, alloc.Config{Cursors: 4})
	var heldNow [64]atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad atomic.Value
	for w := range 4 {
		wg.Go(func() {
			var live []alloc.Claim
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := a.Allocate(1 + (i+w)%9)
				if err != nil {
					bad.Store(err.Error())
					return
				}
				for _, e := range c.Extents {
					if s := segOf(a, e); s < len(heldNow) && heldNow[s].Load() {
						bad.Store("allocated in a held segment")
					}
				}
				a.Publish(c)
				live = append(live, c)
				if len(live) > 40 {
					for _, e := range live[0].Extents {
						a.Free(e)
					}
					live = live[1:]
				}
			}
		})
	}
	for range 3000 {
		held := a.HoldEmpty()
		for _, s := range held {
			if s < len(heldNow) {
				heldNow[s].Store(true)
			}
		}
		for _, s := range held {
			if !a.IsEmpty(s) {
				bad.Store("a held empty segment had a block allocated")
			}
		}
		for _, s := range held {
			if s < len(heldNow) {
				heldNow[s].Store(false)
			}
		}
		a.Release(held, func(int) bool { return true })
		if _, _, err := a.ShrinkTail(nil); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	if d := a.Stats().DoubleFreeBlocks; d != 0 {
		t.Fatalf("%d double-freed blocks", d)
	}
}

func TestPreferLow(t *testing.T) {
	g := alloc.Geometry{BlockSize: 4096, SegmentBlocks: 64}
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	cs := fillSegments(t, a, 6) // the cursor owns segment 5
	// Segment 1 gets 16 free blocks (less than half), 2 gets 32, 4 all 64.
	for _, e := range []alloc.Extent{{Start: 64, Len: 16}, {Start: 128, Len: 32}} {
		a.Free(e)
	}
	a.Free(cs[4].Extents[0])
	c := mustAllocate(t, a, 2)
	eq(t, 4, segOf(a, c.Extents[0]), "by default a trade takes the most free segment")
	a.Abort(c)
	a.DropCursorSegments()
	a.SetPreferLow(true)
	c = mustAllocate(t, a, 2)
	eq(t, 2, segOf(a, c.Extents[0]), "preferring low: the lowest with half a segment free")
	a.SetPreferLow(false)
}
