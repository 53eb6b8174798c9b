package alloc

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// TestAllocateFreshInOrder fragments a heap with claims and frees, then
// makes fresh claims between ordinary ones and checks that every fresh
// claim lies right after the previous one or at the start of a segment
// that was empty when it was taken, and that the fresh cursor's segments
// hold fresh claims only.
func TestAllocateFreshInOrder(t *testing.T) {
	g := Geometry{BlockSize: 128, SegmentBlocks: 1024}
	a, err := New(g, Config{Cursors: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	var live []Extent
	for range 3000 {
		c, err := a.Allocate(1 + r.IntN(60))
		if err != nil {
			t.Fatal(err)
		}
		a.Publish(c)
		live = append(live, c.Extents...)
	}
	for i := range live { // free two thirds, leaving holes everywhere
		if i%3 != 0 {
			a.Free(live[i])
		}
	}
	sb := uint64(g.SegmentBlocks)
	emptyAt := func() map[uint64]bool {
		m := map[uint64]bool{}
		for i, s := range *a.segs.Load() {
			if s.free.Load() == int64(g.SegmentBlocks) {
				m[uint64(i)] = true
			}
		}
		return m
	}
	fresh := map[uint64]bool{} // segments fresh claims were made in
	freshBlocks := map[uint64]int{}
	var prev *Extent
	newSegs, inOrder := 0, 0
	for i := range 2000 {
		empty := emptyAt()
		segsBefore := uint64(a.Segments())
		c, err := a.AllocateFresh(1 + r.IntN(40))
		if err != nil {
			t.Fatal(err)
		}
		a.Publish(c)
		if len(c.Extents) != 1 {
			t.Fatalf("claim %d: %d extents, want 1", i, len(c.Extents))
		}
		e := c.Extents[0]
		si := e.Start / sb
		switch {
		case prev != nil && e.Start == prev.Start+uint64(prev.Len):
			inOrder++
		case e.Start%sb == 0 && (empty[si] || si >= segsBefore):
			newSegs++
		default:
			t.Fatalf("claim %d at %v: neither after %v nor at the start of an empty segment", i, e, prev)
		}
		fresh[si] = true
		freshBlocks[si] += int(e.Len)
		prev = &c.Extents[0]
		if o, err := a.Allocate(1 + r.IntN(40)); err != nil { // ordinary claims go elsewhere
			t.Fatal(err)
		} else {
			a.Publish(o)
			if fresh[o.Extents[0].Start/sb] {
				t.Fatalf("ordinary claim %v landed in a fresh segment", o.Extents)
			}
		}
	}
	for si := range fresh {
		s := (*a.segs.Load())[si]
		if got := g.SegmentBlocks - int(s.free.Load()); got != freshBlocks[si] {
			t.Errorf("segment %d: %d blocks allocated, %d by fresh claims", si, got, freshBlocks[si])
		}
	}
	t.Logf("%d fresh claims in order, %d at the start of a segment, %d segments", inOrder, newSegs, a.Segments())
	if newSegs > 100 || inOrder < 1900 {
		t.Errorf("%d claims in order and %d segment starts: expected almost all in order", inOrder, newSegs)
	}
}

// TestAllocateFreshAtMaxSegments: with the heap at MaxSegments and no
// empty segment, a fresh claim still finds room like any other.
func TestAllocateFreshAtMaxSegments(t *testing.T) {
	g := Geometry{BlockSize: 128, SegmentBlocks: 256}
	a, err := New(g, Config{Cursors: 1, MaxSegments: 2})
	if err != nil {
		t.Fatal(err)
	}
	var cs []Claim
	for range 2 * 256 / 8 {
		c, err := a.Allocate(8)
		if err != nil {
			t.Fatal(err)
		}
		a.Publish(c)
		cs = append(cs, c)
	}
	a.Free(cs[3].Extents[0])
	a.Free(cs[40].Extents[0])
	for range 2 {
		c, err := a.AllocateFresh(8)
		if err != nil {
			t.Fatalf("fresh claim in a full heap with 16 free blocks: %v", err)
		}
		a.Publish(c)
	}
	if _, err := a.AllocateFresh(8); err == nil {
		t.Fatal("a fresh claim in a full heap succeeded")
	}
}

// TestAllocateFreshConcurrent runs fresh and ordinary claims and frees
// from several goroutines (for the race detector) and checks that no block
// was handed out twice.
func TestAllocateFreshConcurrent(t *testing.T) {
	g := Geometry{BlockSize: 128, SegmentBlocks: 512}
	a, err := New(g, Config{Cursors: 2})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	owned := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			var mine []Extent
			for i := range 2000 {
				var c Claim
				var err error
				if w%2 == 0 {
					c, err = a.AllocateFresh(1 + r.IntN(30))
				} else {
					c, err = a.Allocate(1 + r.IntN(30))
				}
				if err != nil {
					t.Error(err)
					return
				}
				a.Publish(c)
				mu.Lock()
				for _, e := range c.Extents {
					for b := e.Start; b < e.Start+uint64(e.Len); b++ {
						if owned[b] {
							t.Errorf("block %d handed out twice", b)
						}
						owned[b] = true
					}
				}
				mu.Unlock()
				mine = append(mine, c.Extents...)
				if i%3 == 0 {
					e := mine[0]
					mine = mine[1:]
					mu.Lock()
					for b := e.Start; b < e.Start+uint64(e.Len); b++ {
						delete(owned, b)
					}
					mu.Unlock()
					a.Free(e)
				}
			}
		}()
	}
	wg.Wait()
	if st := a.Stats(); st.DoubleFreeBlocks != 0 {
		t.Errorf("%d blocks freed twice", st.DoubleFreeBlocks)
	}
}
