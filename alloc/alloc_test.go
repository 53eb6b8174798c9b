package alloc_test

import (
	"testing"

	"github.com/heapkv/heapkv/alloc"
)

func TestGeometry(t *testing.T) {
	for _, tc := range []struct {
		g  alloc.Geometry
		ok bool
	}{
		{alloc.Geometry{BlockSize: 4096, SegmentBlocks: 16384}, true},
		{alloc.Geometry{BlockSize: 512, SegmentBlocks: 64}, true},
		{alloc.Geometry{BlockSize: 1 << 20, SegmentBlocks: alloc.MaxSegmentBlocks}, true},
		{alloc.Geometry{BlockSize: 128, SegmentBlocks: 64}, true},
		{alloc.Geometry{BlockSize: 64, SegmentBlocks: 64}, false},
		{alloc.Geometry{BlockSize: 3000, SegmentBlocks: 64}, false},
		{alloc.Geometry{BlockSize: 2 << 20, SegmentBlocks: 64}, false},
		{alloc.Geometry{BlockSize: 4096, SegmentBlocks: 0}, false},
		{alloc.Geometry{BlockSize: 4096, SegmentBlocks: 100}, false},
		{alloc.Geometry{BlockSize: 4096, SegmentBlocks: 2 * alloc.MaxSegmentBlocks}, false},
		{alloc.Geometry{}, false},
	} {
		err := tc.g.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("%+v.Validate() = %v", tc.g, err)
		}
		if !tc.ok {
			wantErr(t, err, alloc.ErrInvalid, "%+v", tc.g)
			_, err := alloc.New(tc.g, alloc.Config{})
			wantErr(t, err, alloc.ErrInvalid, "New(%+v)", tc.g)
		}
	}
	g := alloc.Geometry{BlockSize: 4096, SegmentBlocks: 128}
	eq(t, int64(4096*128), g.SegmentBytes(), "SegmentBytes")
	for nbytes, want := range map[int64]int{-1: 0, 0: 0, 1: 1, 4096: 1, 4097: 2, 1 << 40: 1 << 28} {
		eq(t, want, g.BlocksFor(nbytes), "BlocksFor(%d)", nbytes)
	}
	eq(t, "[1024+3]", alloc.Extent{Start: 1024, Len: 3}.String(), "String")
	eq(t, uint64(1027), alloc.Extent{Start: 1024, Len: 3}.End(), "End")
	for _, e := range []alloc.Extent{{Start: 0, Len: 0}, {Start: 127, Len: 2}, {Start: 100, Len: 129}, {Start: ^uint64(0) - 1, Len: 5}} {
		wantErr(t, g.CheckExtent(e), alloc.ErrCorrupt, "CheckExtent(%v)", e)
	}
	for _, e := range []alloc.Extent{{Start: 0, Len: 128}, {Start: 127, Len: 1}, {Start: 128, Len: 128}} {
		noErr(t, g.CheckExtent(e))
	}
	_, err := alloc.New(g, alloc.Config{Cursors: -1})
	wantErr(t, err, alloc.ErrInvalid, "negative cursors")
}

func TestAllocateBasics(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{Cursors: 1})
	eq(t, 0, a.Segments(), "new heap")
	eq(t, small, a.Geometry(), "Geometry")
	_, err := a.Allocate(0)
	wantErr(t, err, alloc.ErrInvalid, "Allocate(0)")

	c1 := mustAllocate(t, a, 3)
	eq(t, []alloc.Extent{{Start: 0, Len: 3}}, c1.Extents, "first claim")
	c2 := mustAllocate(t, a, 5)
	eq(t, []alloc.Extent{{Start: 3, Len: 5}}, c2.Extents, "next fit")
	// Larger than a segment: whole-segment pieces plus the rest; the cursor
	// trades its segment away for fresh ones.
	c3 := mustAllocate(t, a, 2*64+10)
	eq(t, 3, len(c3.Extents), "extents of %v", c3.Extents)
	for _, e := range c3.Extents {
		if e.Len > 64 {
			t.Fatalf("extent %v longer than a segment", e)
		}
	}
	st := a.Stats()
	eq(t, int64(3+5+2*64+10), st.AllocatedBlocks, "allocated")
	eq(t, int64(st.Segments)*64-st.AllocatedBlocks, st.FreeBlocks, "free")
	eq(t, int64(st.Segments), st.Grows, "grows")

	a.Abort(c2)
	if a.IsAllocated(alloc.Extent{Start: 3, Len: 1}) {
		t.Fatal("aborted claim still allocated")
	}
	a.Abort(c2) // idempotent
	a.Publish(c1)
	a.Abort(c1) // after Publish: no effect
	if !a.IsAllocated(c1.Extents[0]) {
		t.Fatal("Abort after Publish cleared bits")
	}
	a.Publish(alloc.Claim{}) // zero claim: no effect
	a.Abort(alloc.Claim{})
	eq(t, int64(0), a.Stats().DoubleFreeBlocks, "double frees")

	before := a.Stats()
	a.Free(c1.Extents[0])
	a.Free(c1.Extents[0]) // a bug in the caller, but the counts stay exact
	after := a.Stats()
	eq(t, int64(3), after.DoubleFreeBlocks, "double frees after freeing twice")
	eq(t, before.AllocatedBlocks-3, after.AllocatedBlocks, "allocated after freeing twice")
	eq(t, before.FreeBlocks+3, after.FreeBlocks, "free after freeing twice")
	if !panics(func() { a.Free(alloc.Extent{Start: 63, Len: 2}) }) {
		t.Fatal("Free of an extent crossing segments did not panic")
	}
	if !panics(func() { a.Free(alloc.Extent{Start: 64 * 100, Len: 1}) }) {
		t.Fatal("Free beyond the heap did not panic")
	}
	if a.IsAllocated(alloc.Extent{Start: 64 * 100, Len: 1}) || a.IsAllocated(alloc.Extent{}) {
		t.Fatal("IsAllocated of an invalid extent")
	}
}

// TestScatter fills a segment, frees every other block, and asks for more
// than one block: the only candidate segment has room but no run, so the
// claim is scattered over single blocks.
func TestScatter(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{Cursors: 1})
	var singles []alloc.Claim
	for range 64 {
		c := mustAllocate(t, a, 1)
		a.Publish(c)
		singles = append(singles, c)
	}
	eq(t, 1, a.Segments(), "segments")
	for i := 0; i < 64; i += 2 {
		a.Free(singles[i].Extents[0])
	}
	c := mustAllocate(t, a, 3)
	eq(t, []alloc.Extent{{Start: 0, Len: 1}, {Start: 2, Len: 1}, {Start: 4, Len: 1}}, c.Extents, "scattered claim")
	eq(t, 1, a.Segments(), "segments after scatter")
	// 29 blocks left free, so 30 needs a new segment, where it is contiguous.
	c = mustAllocate(t, a, 30)
	eq(t, []alloc.Extent{{Start: 64, Len: 30}}, c.Extents, "claim in a new segment")
}

// TestTradeTakesEmptiest: a cursor that trades takes the unowned segment
// with the most free blocks.
func TestTradeTakesEmptiest(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{Cursors: 1})
	for range 4 { // four full segments
		a.Publish(mustAllocate(t, a, 64))
	}
	a.Free(alloc.Extent{Start: 64 + 10, Len: 20})  // segment 1: 20 free
	a.Free(alloc.Extent{Start: 128 + 10, Len: 30}) // segment 2: 30 free
	a.Free(alloc.Extent{Start: 192 + 5, Len: 5})   // segment 3: 5 free
	c := mustAllocate(t, a, 8)
	eq(t, []alloc.Extent{{Start: 138, Len: 8}}, c.Extents, "claim")
	eq(t, 4, a.Segments(), "no growth")
	// Next fit continues in the segment now owned.
	c = mustAllocate(t, a, 8)
	eq(t, []alloc.Extent{{Start: 146, Len: 8}}, c.Extents, "next claim")
}

func TestMaxSegmentsAndSteal(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{Cursors: 4, MaxSegments: 2})
	// Whatever cursors serve these, the heap holds 128 blocks and no more:
	// once at the limit, idle cursors' segments are stolen.
	var claims []alloc.Claim
	for range 128 / 8 {
		claims = append(claims, mustAllocate(t, a, 8))
	}
	eq(t, 2, a.Segments(), "segments")
	_, err := a.Allocate(1)
	wantErr(t, err, alloc.ErrFull, "Allocate on a full heap")
	_, err = a.Allocate(129)
	wantErr(t, err, alloc.ErrFull, "Allocate of more than the heap can ever hold")
	a.Abort(claims[3])
	c := mustAllocate(t, a, 8)
	eq(t, claims[3].Extents, c.Extents, "reuse of the aborted blocks")
	// A multi-extent request that fails part way gives back what it took.
	a.Abort(c)
	for _, c := range claims {
		a.Abort(c)
	}
	a.Publish(mustAllocate(t, a, 64))
	_, err = a.Allocate(72) // the first 64 fit, the last 8 do not
	wantErr(t, err, alloc.ErrFull, "Allocate(72) with 64 free")
	eq(t, int64(64), a.Stats().AllocatedBlocks, "allocated after a failed Allocate")
	eq(t, int64(0), a.Stats().DoubleFreeBlocks, "double frees")
	mustAllocate(t, a, 64)
}

func TestSnapshotExcludesUnpublished(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{Cursors: 2})
	c1 := mustAllocate(t, a, 4)
	c2 := mustAllocate(t, a, 100)
	s := a.Snapshot()
	eq(t, int64(0), s.AllocatedBlocks(), "snapshot with only unpublished claims")
	eq(t, a.Segments(), s.Segments(), "segments")
	a.Publish(c2)
	s = a.Snapshot()
	eq(t, int64(100), s.AllocatedBlocks(), "after publishing c2")
	for _, e := range c2.Extents {
		if !s.IsAllocated(e) {
			t.Fatalf("published %v not in snapshot", e)
		}
	}
	if s.IsAllocated(c1.Extents[0]) {
		t.Fatal("unpublished claim in snapshot")
	}
	s.Clear(c2.Extents[0]) // a pending free
	eq(t, int64(100-c2.Extents[0].Len), s.AllocatedBlocks(), "after Clear")
	if !a.IsAllocated(c2.Extents[0]) {
		t.Fatal("Snapshot.Clear changed the allocator")
	}
	if !panics(func() { s.Clear(alloc.Extent{Start: 1 << 30, Len: 1}) }) {
		t.Fatal("Snapshot.Clear beyond the heap did not panic")
	}
	a.Abort(c1)
	eq(t, int64(100), a.Snapshot().AllocatedBlocks(), "after abort")
}

func TestMarkAllocatedFree(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{MaxSegments: 10})
	noErr(t, a.MarkAllocated(alloc.Extent{Start: 130, Len: 4}))
	eq(t, 3, a.Segments(), "grown to include segment 2")
	eq(t, int64(4), a.Stats().AllocatedBlocks, "allocated")
	for _, tc := range []struct {
		e    alloc.Extent
		what string
	}{
		{alloc.Extent{Start: 130, Len: 0}, "empty"},
		{alloc.Extent{Start: 120, Len: 10}, "crosses segments"},
		{alloc.Extent{Start: 128, Len: 3}, "overlaps an allocated block"},
		{alloc.Extent{Start: 133, Len: 1}, "the same block again"},
		{alloc.Extent{Start: 640, Len: 1}, "beyond MaxSegments"},
		{alloc.Extent{Start: 1 << 62, Len: 1}, "absurdly far"},
	} {
		wantErr(t, a.MarkAllocated(tc.e), alloc.ErrCorrupt, "MarkAllocated(%v) %s", tc.e, tc.what)
	}
	eq(t, int64(4), a.Stats().AllocatedBlocks, "allocated after failed marks")
	eq(t, 3, a.Segments(), "segments after failed marks")
	for _, tc := range []struct {
		e    alloc.Extent
		what string
	}{
		{alloc.Extent{Start: 130, Len: 0}, "empty"},
		{alloc.Extent{Start: 129, Len: 2}, "partly free"},
		{alloc.Extent{Start: 0, Len: 1}, "free"},
		{alloc.Extent{Start: 192, Len: 1}, "beyond the heap"},
		{alloc.Extent{Start: 190, Len: 4}, "crosses segments"},
	} {
		wantErr(t, a.MarkFree(tc.e), alloc.ErrCorrupt, "MarkFree(%v) %s", tc.e, tc.what)
	}
	eq(t, int64(4), a.Stats().AllocatedBlocks, "allocated after failed frees")
	noErr(t, a.MarkFree(alloc.Extent{Start: 131, Len: 2}))
	noErr(t, a.MarkAllocated(alloc.Extent{Start: 131, Len: 1}))
	got := runsOf(t, small, a.ForEachAllocated).sorted()
	eq(t, []uint64{130, 131, 133}, got, "allocated blocks")
	eq(t, int64(3), a.Stats().AllocatedBlocks, "allocated")
	// A recovered heap allocates around what was marked.
	c := mustAllocate(t, a, 64)
	for _, e := range c.Extents {
		if e.Start/64 == 2 {
			t.Fatalf("full-segment claim %v in the partly used segment 2", e)
		}
	}
}

// TestStaleClaim: a published claim's slot in the unpublished set is reused
// by the next claim; Publish or Abort of the old claim must not touch it.
func TestStaleClaim(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{Cursors: 1})
	c1 := mustAllocate(t, a, 2)
	a.Publish(c1)
	c2 := mustAllocate(t, a, 3)
	a.Abort(c1)
	a.Publish(c1)
	a.Free(c1.Extents[0])
	if s := a.Snapshot(); s.AllocatedBlocks() != 0 {
		t.Fatalf("snapshot holds %d blocks; c2 is unpublished", s.AllocatedBlocks())
	}
	a.Abort(c2)
	eq(t, int64(0), a.Stats().AllocatedBlocks, "allocated after aborting c2")
	eq(t, int64(0), a.Stats().DoubleFreeBlocks, "double frees")
}

// TestAllocatePreferring: claims from an idle preferred cursor are
// adjacent (next fit), and the cursor index wraps around.
func TestAllocatePreferring(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{Cursors: 4})
	other := mustAllocate(t, a, 2) // some cursor, maybe cursor 0
	var prev alloc.Claim
	for i := range 8 {
		c, err := a.AllocatePreferring(0, 1+i%3)
		noErr(t, err)
		if i > 0 && prev.Extents[0].End() != c.Extents[0].Start {
			t.Fatalf("claim %d at %v does not follow %v", i, c.Extents, prev.Extents)
		}
		prev = c
	}
	c, err := a.AllocatePreferring(4, 1) // 4 wraps around to cursor 0
	noErr(t, err)
	eq(t, prev.Extents[0].End(), c.Extents[0].Start, "cursor index wraps")
	a.Abort(other)
}
