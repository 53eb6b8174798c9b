package alloc_test

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
)

// small is the geometry most tests use: tiny segments, so that trades,
// growth and scattering happen after a handful of allocations.
var small = alloc.Geometry{BlockSize: 4096, SegmentBlocks: 64}

func newAlloc(t testing.TB, g alloc.Geometry, cfg alloc.Config) *alloc.Allocator {
	t.Helper()
	a, err := alloc.New(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// blockSet is a set of block numbers.
type blockSet map[uint64]bool

func (s blockSet) addExtent(e alloc.Extent) {
	for b := e.Start; b < e.End(); b++ {
		s[b] = true
	}
}

func (s blockSet) sorted() []uint64 {
	out := make([]uint64, 0, len(s))
	for b := range s {
		out = append(out, b)
	}
	slices.Sort(out)
	return out
}

// runsOf collects the runs that a ForEachAllocated reports, checking that
// they are valid extents in block order and maximal (two runs in one segment
// never touch), and returns them as a block set.
func runsOf(t testing.TB, g alloc.Geometry, forEach func(func(alloc.Extent) bool)) blockSet {
	t.Helper()
	s := blockSet{}
	var prev alloc.Extent
	forEach(func(e alloc.Extent) bool {
		if err := g.CheckExtent(e); err != nil {
			t.Fatalf("ForEachAllocated yielded %v: %v", e, err)
		}
		if prev.Len > 0 {
			if e.Start < prev.End() {
				t.Fatalf("ForEachAllocated out of order: %v then %v", prev, e)
			}
			sb := uint64(g.SegmentBlocks)
			if e.Start == prev.End() && e.Start%sb != 0 {
				t.Fatalf("ForEachAllocated runs not maximal: %v then %v", prev, e)
			}
		}
		prev = e
		s.addExtent(e)
		return true
	})
	return s
}

func eq[T any](t testing.TB, want, got T, format string, args ...any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("%s: got %v, want %v", fmt.Sprintf(format, args...), got, want)
	}
}

func wantErr(t testing.TB, err, target error, format string, args ...any) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", fmt.Sprintf(format, args...), err, target)
	}
	// Every alloc.ErrCorrupt is corruption to every layer.
	if errors.Is(target, alloc.ErrCorrupt) && !base.IsCorrupt(err) {
		t.Fatalf("%s: error %v is not base.ErrCorrupt", fmt.Sprintf(format, args...), err)
	}
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustAllocate(t testing.TB, a *alloc.Allocator, n int) alloc.Claim {
	t.Helper()
	c, err := a.Allocate(n)
	if err != nil {
		t.Fatalf("Allocate(%d): %v", n, err)
	}
	if c.Blocks() != n {
		t.Fatalf("Allocate(%d) returned %d blocks: %v", n, c.Blocks(), c.Extents)
	}
	for _, e := range c.Extents {
		if err := a.CheckExtent(e); err != nil {
			t.Fatalf("Allocate(%d) returned %v: %v", n, e, err)
		}
		if !a.IsAllocated(e) {
			t.Fatalf("Allocate(%d) returned %v, not allocated", n, e)
		}
	}
	return c
}

func panics(fn func()) (p bool) {
	defer func() { p = recover() != nil }()
	fn()
	return false
}
