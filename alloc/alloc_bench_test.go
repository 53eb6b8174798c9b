package alloc

import (
	"fmt"
	"sync"
	"testing"

	"github.com/heapkv/heapkv/internal/bitmap"
)

// benchAllocator is what BenchmarkAllocate drives: the cursor-based
// Allocator or the single-lock baseline below.
type benchAllocator interface {
	Allocate(n int) (Claim, error)
	Publish(c Claim)
	Free(e Extent)
}

// mutexAllocator is the baseline the design is measured against: one
// sync.Mutex around all segment bitmaps, with the same next-fit search
// (bitmap.FindClearRun from a global hint, skipping segments whose free count
// is too low) and the same unpublished-claim bookkeeping. It exists only for
// the benchmark.
type mutexAllocator struct {
	mu    sync.Mutex // guards every field below
	g     Geometry
	segs  []*bitmap.Bitmap
	free  []int  // free blocks per segment
	hint  uint64 // next-fit: global block number to search from
	unpub unpubSet
}

func newMutexAllocator(g Geometry) *mutexAllocator {
	return &mutexAllocator{g: g}
}

func (m *mutexAllocator) Allocate(nblocks int) (Claim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb := m.g.SegmentBlocks
	exts := make([]Extent, 0, 1+(nblocks-1)/sb)
	for rem := nblocks; rem > 0; {
		n := min(rem, sb)
		exts = append(exts, m.findLocked(n))
		rem -= n
	}
	slot, seq := m.unpub.add(exts)
	return Claim{Extents: exts, slot: slot, seq: seq}, nil
}

// findLocked claims a run of n blocks: next fit over all segments, starting
// at the hint, growing the heap when no segment has a run. REQUIRES: m.mu.
func (m *mutexAllocator) findLocked(n int) Extent {
	sb := uint64(m.g.SegmentBlocks)
	hs, hoff := int(m.hint/sb), int(m.hint%sb)
	for k := 0; k <= len(m.segs); k++ {
		si, from := (hs+k)%max(len(m.segs), 1), 0
		if k == 0 {
			from = hoff
		} else if k == len(m.segs) {
			from = 0 // wrapped around to the hint segment: its start
		}
		if si >= len(m.segs) || m.free[si] < n {
			continue
		}
		if off := m.segs[si].FindClearRun(from, n); off >= 0 {
			return m.takeLocked(si, off, n)
		}
	}
	m.segs = append(m.segs, bitmap.New(m.g.SegmentBlocks))
	m.free = append(m.free, m.g.SegmentBlocks)
	return m.takeLocked(len(m.segs)-1, 0, n)
}

func (m *mutexAllocator) takeLocked(si, off, n int) Extent {
	m.segs[si].SetRange(off, n)
	m.free[si] -= n
	e := Extent{Start: uint64(si)*uint64(m.g.SegmentBlocks) + uint64(off), Len: uint32(n)}
	m.hint = e.End()
	return e
}

func (m *mutexAllocator) Publish(c Claim) {
	m.mu.Lock()
	m.unpub.remove(c.slot, c.seq)
	m.mu.Unlock()
}

func (m *mutexAllocator) Free(e Extent) {
	m.mu.Lock()
	si, off := m.g.locate(e)
	m.free[si] += m.segs[si].ClearRange(off, int(e.Len))
	m.mu.Unlock()
}

// BenchmarkAllocate measures Allocate+Publish plus the matching Free, with
// b.N operations split over explicit goroutines. Each goroutine frees its
// claims after a delay of `window` operations (deferred frees, as the
// database does), so the heap stays small; the freed blocks usually lie in
// a segment that another cursor owns by then.
func BenchmarkAllocate(b *testing.B) {
	// The heap geometries: 4 KiB blocks in 64 MiB segments (claims of one
	// 4 KiB and one 64 KiB value), and the default 128-byte blocks in 8 MiB
	// segments (claims of a 1 KB and a 4,100-byte value).
	for _, geo := range []struct {
		g      Geometry
		claims []int
	}{
		{Geometry{BlockSize: 4096, SegmentBlocks: 16384}, []int{1, 16}},
		{Geometry{BlockSize: 128, SegmentBlocks: 65536}, []int{8, 33}},
	} {
		g := geo.g
		for _, impl := range []string{"cursors", "mutex"} {
			for _, goroutines := range []int{1, 2, 8, 64} {
				for _, blocks := range geo.claims {
					name := fmt.Sprintf("block=%d/impl=%s/goroutines=%d/blocks=%d", g.BlockSize, impl, goroutines, blocks)
					b.Run(name, func(b *testing.B) {
						var a benchAllocator = newMutexAllocator(g)
						if impl == "cursors" {
							ca, err := New(g, Config{})
							if err != nil {
								b.Fatal(err)
							}
							a = ca
						}
						benchAllocate(b, a, goroutines, blocks)
						if ca, ok := a.(*Allocator); ok {
							st := ca.Stats()
							b.ReportMetric(float64(st.CursorTrades)/float64(b.N), "trades/op")
							b.ReportMetric(float64(st.Segments), "segments")
						}
					})
				}
			}
		}
	}
}

func benchAllocate(b *testing.B, a benchAllocator, goroutines, blocks int) {
	const window = 64
	b.ReportAllocs()
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range goroutines {
		ops := b.N / goroutines
		if w < b.N%goroutines {
			ops++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ring [window]Claim
			for i := range ops + window {
				slot := &ring[i%window]
				for _, e := range slot.Extents {
					a.Free(e)
				}
				*slot = Claim{}
				if i >= ops {
					continue // drain
				}
				c, err := a.Allocate(blocks)
				if err != nil {
					b.Error(err)
					return
				}
				a.Publish(c)
				*slot = c
			}
		}()
	}
	wg.Wait()
}
