package alloc_test

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heapkv/heapkv/alloc"
)

// maxTestBlocks bounds the heap in the concurrency tests (the ownership
// table below has one entry per block).
const maxTestBlocks = 1 << 20

// TestConcurrentAllocateFree has many goroutines allocate, publish or abort,
// and hand published claims to other goroutines that free them. An ownership
// table claimed with compare-and-swap catches any block handed out twice
// while still in use; at the end the allocator must hold exactly the blocks
// still owned.
func TestConcurrentAllocateFree(t *testing.T) {
	const (
		writers = 16
		freers  = 4
		ops     = 1500
	)
	a := newAlloc(t, small, alloc.Config{Cursors: 4, MaxSegments: maxTestBlocks / 64})
	owned := make([]atomic.Int32, maxTestBlocks)
	var bad atomic.Int64 // blocks found double-owned
	own := func(c alloc.Claim, from, to int32) {
		for _, e := range c.Extents {
			for b := e.Start; b < e.End(); b++ {
				if !owned[b].CompareAndSwap(from, to) {
					bad.Add(1)
				}
			}
		}
	}

	toFree := make(chan alloc.Claim, 1024)
	var kept sync.Map // freer index -> []alloc.Claim left at the end
	var fwg sync.WaitGroup
	for f := range freers {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			var held []alloc.Claim // free with a delay, like deferred frees
			rng := rand.New(rand.NewPCG(uint64(f), 1))
			for c := range toFree {
				held = append(held, c)
				for len(held) > 32 {
					i := rng.IntN(len(held))
					own(held[i], 1, 0) // give up ownership before the blocks can be reused
					for _, e := range held[i].Extents {
						a.Free(e)
					}
					held[i] = held[len(held)-1]
					held = held[:len(held)-1]
				}
			}
			kept.Store(f, held)
		}()
	}

	var wwg sync.WaitGroup
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for i := range ops {
				n := 1 + rng.IntN(12)
				if rng.IntN(50) == 0 {
					n = 1 + rng.IntN(200)
				}
				c, err := a.Allocate(n)
				if err != nil {
					t.Error(err)
					return
				}
				if c.Blocks() != n {
					t.Errorf("Allocate(%d) returned %v", n, c.Extents)
					return
				}
				for _, e := range c.Extents {
					if e.End() > maxTestBlocks {
						t.Errorf("heap grew past the test's table: %v", e)
						return
					}
				}
				own(c, 0, 1)
				if rng.IntN(8) == 0 {
					own(c, 1, 0)
					a.Abort(c)
					continue
				}
				a.Publish(c)
				toFree <- c
				if i%200 == 0 {
					a.Snapshot() // for the race detector: snapshots among frees
				}
			}
		}()
	}
	wwg.Wait()
	close(toFree)
	fwg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d blocks were handed out while in use", n)
	}

	want := blockSet{}
	kept.Range(func(_, v any) bool {
		for _, c := range v.([]alloc.Claim) {
			for _, e := range c.Extents {
				want.addExtent(e)
			}
		}
		return true
	})
	got := runsOf(t, small, a.ForEachAllocated)
	eq(t, want.sorted(), got.sorted(), "allocated blocks after the run")
	st := a.Stats()
	eq(t, int64(len(want)), st.AllocatedBlocks, "Stats.AllocatedBlocks")
	eq(t, int64(st.Segments)*64-st.AllocatedBlocks, st.FreeBlocks, "Stats.FreeBlocks")
	eq(t, int64(0), st.DoubleFreeBlocks, "Stats.DoubleFreeBlocks")
	eq(t, int64(len(want)), a.Snapshot().AllocatedBlocks(), "snapshot")
	t.Logf("stats: %+v", st)
}

// TestSnapshotConcurrentClaims takes snapshots while goroutines allocate,
// publish and abort. Claims are logged as "publishing" just before Publish
// and "published" just after it returns. A snapshot must contain every block
// published before it started and only blocks of claims that were publishing
// by the time it returned: never an in-flight or aborted claim.
func TestSnapshotConcurrentClaims(t *testing.T) {
	a := newAlloc(t, small, alloc.Config{Cursors: 3})
	var (
		mu         sync.Mutex // guards the two logs below
		publishing []alloc.Claim
		published  []alloc.Claim
	)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for range 400 {
				c, err := a.Allocate(1 + rng.IntN(10))
				if err != nil {
					t.Error(err)
					return
				}
				if rng.IntN(4) == 0 {
					a.Abort(c) // these blocks get reused by later claims
					continue
				}
				mu.Lock()
				publishing = append(publishing, c)
				mu.Unlock()
				a.Publish(c)
				mu.Lock()
				published = append(published, c)
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	snapshots := 0
	for last := false; !last; {
		select {
		case <-done:
			last = true // one more snapshot after the writers have stopped
		default:
		}
		mu.Lock()
		doneBefore := len(published)
		mu.Unlock()
		s := a.Snapshot()
		mu.Lock()
		startedAfter := publishing[:len(publishing):len(publishing)]
		lower := published[:doneBefore:doneBefore]
		mu.Unlock()

		upper := blockSet{}
		for _, c := range startedAfter {
			for _, e := range c.Extents {
				upper.addExtent(e)
			}
		}
		got := runsOf(t, small, s.ForEachAllocated)
		for b := range got {
			if !upper[b] {
				t.Fatalf("snapshot %d holds block %d of no published claim", snapshots, b)
			}
		}
		for _, c := range lower {
			for _, e := range c.Extents {
				if !s.IsAllocated(e) {
					t.Fatalf("snapshot %d lacks %v, published before it", snapshots, e)
				}
			}
		}
		snapshots++
	}
	t.Logf("%d snapshots", snapshots)
}
