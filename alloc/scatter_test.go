package alloc_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/heapkv/heapkv/alloc"
)

// tiny is a geometry of 128-byte blocks (a scattered piece must be at least
// 6 of them) in segments of 64.
var tiny = alloc.Geometry{BlockSize: 128, SegmentBlocks: 64}

// fragment fills a new segment with single-block claims from a one-cursor
// allocator and frees the runs [start, start+length) of runs, leaving the
// cursor in that segment.
func fragment(t *testing.T, a *alloc.Allocator, runs [][2]uint64) {
	t.Helper()
	var first uint64
	for i := range tiny.SegmentBlocks {
		c := mustAllocate(t, a, 1)
		a.Publish(c)
		if i == 0 {
			first = c.Extents[0].Start
		}
	}
	for _, r := range runs {
		a.Free(alloc.Extent{Start: first + r[0], Len: uint32(r[1])})
	}
}

// pairs returns runs of 2 free blocks every 4 blocks: 32 free blocks, no run
// a scattered claim may take a piece from.
func pairs() [][2]uint64 {
	var runs [][2]uint64
	for b := uint64(0); b < 64; b += 4 {
		runs = append(runs, [2]uint64{b, 2})
	}
	return runs
}

// TestScatterSkipsShortRuns: a segment whose free blocks lie in runs of 2
// does not take a claim of 10 in five pieces; a new segment does, whole.
func TestScatterSkipsShortRuns(t *testing.T) {
	a := newAlloc(t, tiny, alloc.Config{Cursors: 1})
	fragment(t, a, pairs())
	c := mustAllocate(t, a, 10)
	eq(t, []alloc.Extent{{Start: 64, Len: 10}}, c.Extents, "claim")
	eq(t, 2, a.Segments(), "segments")
	eq(t, int64(32+54), a.Stats().FreeBlocks, "free blocks (segment 0 untouched)")
}

// TestScatterTakesLongEnoughRuns: runs of 6 free blocks and more are taken,
// in address order, the shorter ones skipped; the last piece may be cut
// short.
func TestScatterTakesLongEnoughRuns(t *testing.T) {
	a := newAlloc(t, tiny, alloc.Config{Cursors: 1})
	fragment(t, a, [][2]uint64{{0, 2}, {4, 6}, {12, 1}, {20, 7}, {40, 6}})
	c := mustAllocate(t, a, 15)
	eq(t, []alloc.Extent{{Start: 4, Len: 6}, {Start: 20, Len: 7}, {Start: 40, Len: 2}}, c.Extents, "claim")
	eq(t, 1, a.Segments(), "segments")
}

// TestScatterTakesLongestRunsFirst: a claim that address order would split
// into more than four pieces takes the longest runs first (ties: the lower
// one), and its extents come in address order.
func TestScatterTakesLongestRunsFirst(t *testing.T) {
	a := newAlloc(t, tiny, alloc.Config{Cursors: 1})
	fragment(t, a, [][2]uint64{{0, 6}, {8, 6}, {16, 6}, {24, 6}, {32, 12}, {48, 14}})
	c := mustAllocate(t, a, 30) // address order: 6+6+6+6+6 of 12, five pieces
	eq(t, []alloc.Extent{{Start: 0, Len: 4}, {Start: 32, Len: 12}, {Start: 48, Len: 14}}, c.Extents, "claim")
	eq(t, 1, a.Segments(), "segments")
}

// TestScatterPiecesScaleWithTheClaim: a claim of 192 blocks takes no piece
// under 12 blocks (a sixteenth of it), though runs of 10 are longer than
// the 6 a small claim may take.
func TestScatterPiecesScaleWithTheClaim(t *testing.T) {
	g := alloc.Geometry{BlockSize: 128, SegmentBlocks: 1024}
	for _, tc := range []struct {
		run      uint64 // length of each of 20 free runs, 20 blocks apart
		want     []alloc.Extent
		segments int
	}{
		{10, []alloc.Extent{{Start: 1024, Len: 192}}, 2},
		{12, nil, 1}, // the first 16 runs, whole
	} {
		a := newAlloc(t, g, alloc.Config{Cursors: 1})
		for range g.SegmentBlocks {
			a.Publish(mustAllocate(t, a, 1))
		}
		for i := range uint64(20) {
			a.Free(alloc.Extent{Start: 20 * i, Len: uint32(tc.run)})
		}
		want := tc.want
		if want == nil {
			for i := range uint64(16) {
				want = append(want, alloc.Extent{Start: 20 * i, Len: 12})
			}
		}
		c := mustAllocate(t, a, 192)
		eq(t, want, c.Extents, "runs of %d: claim", tc.run)
		eq(t, tc.segments, a.Segments(), "runs of %d: segments", tc.run)
	}
}

// TestScatterWhenTheHeapMayNotGrow: a heap at MaxSegments, and one whose
// end a compaction is emptying (SetPreferLow), scatter a claim over runs of
// any length, as before there was a shortest piece, rather than take a new
// segment.
func TestScatterWhenTheHeapMayNotGrow(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       alloc.Config
		preferLow bool
	}{
		{"MaxSegments", alloc.Config{Cursors: 1, MaxSegments: 1}, false},
		{"SetPreferLow", alloc.Config{Cursors: 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAlloc(t, tiny, tc.cfg)
			fragment(t, a, pairs())
			a.SetPreferLow(tc.preferLow)
			c := mustAllocate(t, a, 10)
			eq(t, []alloc.Extent{{Start: 0, Len: 2}, {Start: 4, Len: 2}, {Start: 8, Len: 2}, {Start: 12, Len: 2}, {Start: 16, Len: 2}},
				c.Extents, "claim")
			eq(t, 1, a.Segments(), "segments")
		})
	}
}

// TestScatterReusesPunchedSegment: the empty segment a fragmented claim
// takes is one given back to the file system, if there is one, before a new
// one is added. (A trade takes a punched segment only when no other has
// room, so here it first tries the fragmented segment 0.)
func TestScatterReusesPunchedSegment(t *testing.T) {
	a := newAlloc(t, tiny, alloc.Config{Cursors: 1})
	fragment(t, a, nil)
	one := mustAllocate(t, a, 64)
	a.Publish(one)
	a.Publish(mustAllocate(t, a, 64)) // segment 2, the cursor's now
	a.Free(one.Extents[0])
	held := a.Hold([]int{1})
	a.Release(held, func(int) bool { return true })
	eq(t, 1, a.Stats().PunchedSegments, "punched segments")
	for _, r := range pairs() {
		a.Free(alloc.Extent{Start: r[0], Len: uint32(r[1])})
	}
	c := mustAllocate(t, a, 10)
	eq(t, []alloc.Extent{{Start: 64, Len: 10}}, c.Extents, "claim")
	eq(t, 3, a.Segments(), "segments")
	eq(t, 0, a.Stats().PunchedSegments, "punched segments after")
}

// TestFragmentationOfVariedSizes simulates what YCSB A does to a heap of
// 128-byte blocks: 20,000 values of log-normal sizes (median 2 KiB, sigma
// 0.5), then 200,000 replacements of Zipf-chosen keys by values of new
// sizes, each old value freed 2,000 replacements later (deferred reuse).
// Scattering over every free run split the replacements into 3 or more
// pieces on average; with the shortest piece, they stay nearly whole, and
// the heap stays within a fifth of the live blocks.
func TestFragmentationOfVariedSizes(t *testing.T) {
	g := alloc.Geometry{BlockSize: 128, SegmentBlocks: 8192}
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	r := rand.New(rand.NewPCG(1, 2))
	blocks := func() int {
		return g.BlocksFor(int64(16 + 2048*math.Exp(0.5*r.NormFloat64())))
	}
	const keys, updates, delay = 20000, 200000, 2000
	live := make([][]alloc.Extent, keys)
	liveBlocks := 0
	for k := range live {
		n := blocks()
		c := mustAllocate(t, a, n)
		a.Publish(c)
		live[k], liveBlocks = c.Extents, liveBlocks+n
	}
	z := rand.NewZipf(r, 1.01, 1, keys-1)
	var queue [][]alloc.Extent
	pieces := 0
	for range updates {
		k := int(z.Uint64() * 0x9e3779b97f4a7c15 % keys)
		n := blocks()
		c := mustAllocate(t, a, n)
		a.Publish(c)
		pieces += len(c.Extents)
		for _, e := range live[k] {
			liveBlocks -= int(e.Len)
		}
		queue = append(queue, live[k])
		live[k], liveBlocks = c.Extents, liveBlocks+n
		if len(queue) > delay {
			for _, e := range queue[0] {
				a.Free(e)
			}
			queue = queue[1:]
		}
	}
	perClaim := float64(pieces) / updates
	space := float64(a.Segments()*g.SegmentBlocks) / float64(liveBlocks)
	t.Logf("pieces a claim %.3f, heap / live blocks %.3f, %d segments", perClaim, space, a.Segments())
	if perClaim > 1.5 {
		t.Errorf("a claim took %.2f pieces on average, want at most 1.5", perClaim)
	}
	if space > 1.2 {
		t.Errorf("the heap is %.2f times the live blocks, want at most 1.2", space)
	}
}
