package alloc_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/heapkv/heapkv/alloc"
)

// model is the naive reference for the random test: which claim owns each
// block, and which claims are published.
type model struct {
	owner     map[uint64]int // block -> claim id
	claims    map[int]alloc.Claim
	published map[int]bool
	nextID    int
}

func newModel() *model {
	return &model{owner: map[uint64]int{}, claims: map[int]alloc.Claim{}, published: map[int]bool{}}
}

func (m *model) add(t *testing.T, c alloc.Claim) {
	t.Helper()
	m.nextID++
	for _, e := range c.Extents {
		for b := e.Start; b < e.End(); b++ {
			if prev, ok := m.owner[b]; ok {
				t.Fatalf("block %d handed out to claim %d and again in %v", b, prev, c.Extents)
			}
			m.owner[b] = m.nextID
		}
	}
	m.claims[m.nextID] = c
}

func (m *model) drop(id int) {
	for _, e := range m.claims[id].Extents {
		for b := e.Start; b < e.End(); b++ {
			delete(m.owner, b)
		}
	}
	delete(m.claims, id)
	delete(m.published, id)
}

// blocks returns every owned block, or only the published ones.
func (m *model) blocks(publishedOnly bool) blockSet {
	s := blockSet{}
	for b, id := range m.owner {
		if !publishedOnly || m.published[id] {
			s[b] = true
		}
	}
	return s
}

// pick returns a random claim id that is (un)published, or 0.
func (m *model) pick(rng *rand.Rand, published bool) int {
	var ids []int
	for id := range m.claims {
		if m.published[id] == published {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return 0
	}
	slices.Sort(ids) // map order is random: sort so a seed replays exactly
	return ids[rng.IntN(len(ids))]
}

// TestModel runs random Allocate / Publish / Abort / Free / Snapshot /
// reopen sequences and compares the Allocator with the model after each.
func TestModel(t *testing.T) {
	for _, tc := range []struct {
		g       alloc.Geometry
		cursors int
		steps   int
	}{
		{small, 1, 4000},
		{small, 3, 4000},
		{alloc.Geometry{BlockSize: 512, SegmentBlocks: 192}, 8, 3000},
	} {
		t.Run(fmt.Sprintf("seg=%d/cursors=%d", tc.g.SegmentBlocks, tc.cursors), func(t *testing.T) {
			for seed := range uint64(3) {
				runModel(t, tc.g, alloc.Config{Cursors: tc.cursors}, tc.steps, seed)
			}
		})
	}
}

func runModel(t *testing.T, g alloc.Geometry, cfg alloc.Config, steps int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	a := newAlloc(t, g, cfg)
	m := newModel()
	sb := g.SegmentBlocks
	for step := range steps {
		switch op := rng.IntN(100); {
		case op < 40:
			n := 1 + rng.IntN(8)
			if rng.IntN(10) == 0 {
				n = 1 + rng.IntN(3*sb)
			}
			c := mustAllocate(t, a, n)
			for _, e := range c.Extents {
				if e.Len > uint32(sb) {
					t.Fatalf("step %d: extent %v longer than a segment", step, e)
				}
			}
			m.add(t, c)
		case op < 65:
			if id := m.pick(rng, false); id != 0 {
				a.Publish(m.claims[id])
				m.published[id] = true
			}
		case op < 75:
			if id := m.pick(rng, false); id != 0 {
				a.Abort(m.claims[id])
				m.drop(id)
			}
		case op < 95:
			if id := m.pick(rng, true); id != 0 {
				for _, e := range m.claims[id].Extents {
					a.Free(e)
				}
				m.drop(id)
			}
		case op < 98:
			checkSnapshot(t, a, m, rng)
		default:
			// Reopen: what a checkpoint and a crash leave. Unpublished
			// claims are lost.
			a = reopen(t, a, cfg)
			for id := range m.claims {
				if !m.published[id] {
					m.drop(id)
				}
			}
		}
		checkStats(t, a, m)
		if step%25 == 0 {
			eq(t, m.blocks(false).sorted(), runsOf(t, g, a.ForEachAllocated).sorted(),
				"step %d: ForEachAllocated", step)
		}
	}
	checkSnapshot(t, a, m, rng)
}

func checkStats(t *testing.T, a *alloc.Allocator, m *model) {
	t.Helper()
	st := a.Stats()
	eq(t, int64(len(m.owner)), st.AllocatedBlocks, "Stats.AllocatedBlocks")
	eq(t, int64(st.Segments)*int64(a.Geometry().SegmentBlocks)-st.AllocatedBlocks, st.FreeBlocks, "Stats.FreeBlocks")
	eq(t, a.Segments(), st.Segments, "Stats.Segments")
	eq(t, int64(0), st.DoubleFreeBlocks, "Stats.DoubleFreeBlocks")
}

// checkSnapshot takes a snapshot and checks that it, its decoded encoding,
// the Allocator restored from it, and an Allocator rebuilt by MarkAllocated
// all hold exactly the published blocks; then that Snapshot.Clear works.
func checkSnapshot(t *testing.T, a *alloc.Allocator, m *model, rng *rand.Rand) {
	t.Helper()
	g := a.Geometry()
	want := m.blocks(true).sorted()
	s := a.Snapshot()
	eq(t, want, runsOf(t, g, s.ForEachAllocated).sorted(), "snapshot")
	eq(t, int64(len(want)), s.AllocatedBlocks(), "snapshot AllocatedBlocks")
	eq(t, a.Segments(), s.Segments(), "snapshot Segments")

	enc, err := s.MarshalBinary()
	noErr(t, err)
	d, err := alloc.UnmarshalSnapshot(enc)
	noErr(t, err)
	eq(t, g, d.Geometry(), "decoded geometry")
	eq(t, s.Segments(), d.Segments(), "decoded segments")
	eq(t, want, runsOf(t, g, d.ForEachAllocated).sorted(), "decoded snapshot")

	r, err := alloc.Restore(d, alloc.Config{Cursors: 2})
	noErr(t, err)
	eq(t, want, runsOf(t, g, r.ForEachAllocated).sorted(), "restored allocator")
	eq(t, int64(len(want)), r.Stats().AllocatedBlocks, "restored AllocatedBlocks")
	eq(t, s.Segments(), r.Segments(), "restored segments")

	rebuilt := newAlloc(t, g, alloc.Config{})
	s.ForEachAllocated(func(e alloc.Extent) bool {
		noErr(t, rebuilt.MarkAllocated(e))
		return true
	})
	eq(t, want, runsOf(t, g, rebuilt.ForEachAllocated).sorted(), "rebuilt by MarkAllocated")

	if id := m.pick(rng, true); id != 0 {
		gone := blockSet{}
		for _, e := range m.claims[id].Extents {
			s.Clear(e)
			gone.addExtent(e)
		}
		for b := range gone {
			if s.IsAllocated(alloc.Extent{Start: b, Len: 1}) {
				t.Fatalf("block %d allocated after Snapshot.Clear", b)
			}
		}
		eq(t, int64(len(want)-len(gone)), s.AllocatedBlocks(), "after Snapshot.Clear")
	}
}

func reopen(t *testing.T, a *alloc.Allocator, cfg alloc.Config) *alloc.Allocator {
	t.Helper()
	enc, err := a.Snapshot().MarshalBinary()
	noErr(t, err)
	s, err := alloc.UnmarshalSnapshot(enc)
	noErr(t, err)
	r, err := alloc.Restore(s, cfg)
	noErr(t, err)
	return r
}
