package alloc

import "testing"

// markPattern marks allocated, by recovery's MarkAllocated, every block of
// segment seg except those for which free reports true.
func markPattern(t *testing.T, a *Allocator, seg int, free func(off int) bool) {
	t.Helper()
	sb := a.g.SegmentBlocks
	for off := 0; off < sb; off++ {
		if free(off) {
			continue
		}
		if err := a.MarkAllocated(Extent{Start: uint64(seg*sb + off), Len: 1}); err != nil {
			t.Fatal(err)
		}
	}
}

// A trade takes a segment whose listed runs hold the claim over one with
// more free blocks in shorter runs, so the claim stays in one piece: the
// segment with the most free blocks (every other block) has no run of 40,
// and taking it would have scattered the claim or grown the heap.
func TestTradePrefersAKnownRun(t *testing.T) {
	a, err := New(Geometry{BlockSize: 128, SegmentBlocks: 256}, Config{Cursors: 1})
	if err != nil {
		t.Fatal(err)
	}
	markPattern(t, a, 0, func(off int) bool { return off%2 == 0 })              // 128 free, runs of 1
	markPattern(t, a, 1, func(off int) bool { return off >= 100 && off < 164 }) // 64 free in one run
	segs := *a.segs.Load()
	// As their last owners would have listed them on giving them up.
	segs[0].longest.Store(1)
	segs[1].longest.Store(64)
	c, err := a.Allocate(40)
	if err != nil {
		t.Fatal(err)
	}
	want := Extent{Start: 256 + 100, Len: 40}
	if len(c.Extents) != 1 || c.Extents[0] != want {
		t.Fatalf("claim of 40 = %v, want %v (segment 1's run)", c.Extents, want)
	}
	if n := a.Stats().Segments; n != 2 {
		t.Fatalf("the heap grew to %d segments, want 2", n)
	}
}

// A cursor that gives its segment up records the segment's longest free
// run, read after the frees others made (the list is rescanned); recovery
// marking blocks of a segment forgets it.
func TestReleaseRecordsLongestRun(t *testing.T) {
	a, err := New(Geometry{BlockSize: 128, SegmentBlocks: 256}, Config{Cursors: 1})
	if err != nil {
		t.Fatal(err)
	}
	first, err := a.Allocate(10) // [0, 10) of a new segment 0
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Allocate(200) // [10, 210)
	if err != nil {
		t.Fatal(err)
	}
	a.Publish(first)
	a.Publish(second)
	for _, e := range second.Extents {
		a.Free(e) // by another goroutine, as far as the cursor's list knows
	}
	a.DropCursorSegments()
	s := (*a.segs.Load())[0]
	if got := s.longest.Load(); got != 246 {
		t.Fatalf("longest run recorded at release = %d, want 246 ([10, 256))", got)
	}

	b, err := New(Geometry{BlockSize: 128, SegmentBlocks: 256}, Config{Cursors: 1})
	if err != nil {
		t.Fatal(err)
	}
	markPattern(t, b, 0, func(off int) bool { return off >= 8 })
	s = (*b.segs.Load())[0]
	s.longest.Store(248)
	if err := b.MarkAllocated(Extent{Start: 100, Len: 1}); err != nil {
		t.Fatal(err)
	}
	if got := s.longest.Load(); got != -1 {
		t.Fatalf("longest after MarkAllocated = %d, want -1 (not known)", got)
	}
}
