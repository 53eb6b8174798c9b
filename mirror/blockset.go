package mirror

import (
	"iter"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/heapkv/heapkv/internal/bitmap"
)

// blockSet is a set of block numbers that grows with the device: tracking
// bitmaps and sync bitmaps are blockSets. It is a list of fixed-size chunks
// (internal/bitmap.Bitmap, atomic words) allocated on first use, so a
// tracking bitmap costs memory only where blocks were written. Every method
// is safe for concurrent use; as with bitmap.Bitmap, multi-word operations
// are atomic per word only.
type blockSet struct {
	// growMu serialises replacing chunks with a longer list or filling a
	// nil entry. Readers load chunks without it.
	growMu sync.Mutex
	chunks atomic.Pointer[[]*bitmap.Bitmap]
}

const (
	chunkShift = 15
	chunkBits  = 1 << chunkShift // blocks per chunk: 128 MiB of 4 KiB blocks in 4 KiB of bitmap
)

func newBlockSet() *blockSet { return &blockSet{} }

func (s *blockSet) list() []*bitmap.Bitmap {
	if p := s.chunks.Load(); p != nil {
		return *p
	}
	return nil
}

// chunk returns chunk i, or nil if it does not exist and create is false.
func (s *blockSet) chunk(i uint64, create bool) *bitmap.Bitmap {
	if l := s.list(); i < uint64(len(l)) && l[i] != nil {
		return l[i]
	}
	if !create {
		return nil
	}
	s.growMu.Lock()
	defer s.growMu.Unlock()
	l := s.list()
	if i < uint64(len(l)) && l[i] != nil {
		return l[i]
	}
	n := make([]*bitmap.Bitmap, max(uint64(len(l)), i+1))
	copy(n, l)
	n[i] = bitmap.New(chunkBits)
	s.chunks.Store(&n)
	return n[i]
}

// forChunks calls fn(chunk index, offset in chunk, count) for each chunk
// that blocks [b, b+n) touch.
func forChunks(b uint64, n int, fn func(ci uint64, off, cnt int)) {
	for n > 0 {
		ci, off := b>>chunkShift, int(b&(chunkBits-1))
		cnt := min(n, chunkBits-off)
		fn(ci, off, cnt)
		b += uint64(cnt)
		n -= cnt
	}
}

// SetRange adds blocks [b, b+n).
func (s *blockSet) SetRange(b uint64, n int) {
	forChunks(b, n, func(ci uint64, off, cnt int) { s.chunk(ci, true).SetRange(off, cnt) })
}

// ClearRange removes blocks [b, b+n).
func (s *blockSet) ClearRange(b uint64, n int) {
	forChunks(b, n, func(ci uint64, off, cnt int) {
		if c := s.chunk(ci, false); c != nil {
			c.ClearRange(off, cnt)
		}
	})
}

// Test reports whether block b is in the set.
func (s *blockSet) Test(b uint64) bool {
	c := s.chunk(b>>chunkShift, false)
	return c != nil && c.Test(int(b&(chunkBits-1)))
}

// Count returns the number of blocks in the set.
func (s *blockSet) Count() int64 {
	var n int64
	for _, c := range s.list() {
		if c != nil {
			n += int64(c.Count())
		}
	}
	return n
}

// CountAndNot returns the number of blocks in s but not in o (o may be nil).
func (s *blockSet) CountAndNot(o *blockSet) int64 {
	var n int64
	for ci, c := range s.list() {
		if c == nil {
			continue
		}
		var oc *bitmap.Bitmap
		if o != nil {
			oc = o.chunk(uint64(ci), false)
		}
		for w := range bitmap.WordsFor(chunkBits) {
			x := c.Word(w)
			if oc != nil {
				x &^= oc.Word(w)
			}
			n += int64(bits.OnesCount64(x))
		}
	}
	return n
}

// nextNeeded returns the first block >= from that is in s (every block, if
// s is nil) and not in done, and below limit; ok is false if there is none.
func nextNeeded(s, done *blockSet, from, limit uint64) (b uint64, ok bool) {
	for from < limit {
		ci := from >> chunkShift
		var sc, dc *bitmap.Bitmap
		if s != nil {
			if sc = s.chunk(ci, false); sc == nil {
				if ci+1 >= uint64(len(s.list())) {
					return 0, false // no chunk of s at or after ci
				}
				from = (ci + 1) << chunkShift
				continue
			}
		}
		if done != nil {
			dc = done.chunk(ci, false)
		}
		base := ci << chunkShift
		for w := int(from-base) / 64; w < bitmap.WordsFor(chunkBits); w++ {
			x := ^uint64(0)
			if sc != nil {
				x = sc.Word(w)
			}
			if dc != nil {
				x &^= dc.Word(w)
			}
			if start := base + uint64(w)*64; start < from {
				x &^= 1<<(from-start) - 1
			}
			if x != 0 {
				b = base + uint64(w)*64 + uint64(bits.TrailingZeros64(x))
				return b, b < limit
			}
		}
		from = base + chunkBits
	}
	return 0, false
}

// Runs returns the maximal runs of blocks in the set as (start, length)
// pairs in increasing order.
func (s *blockSet) Runs() iter.Seq2[uint64, uint64] {
	return func(yield func(uint64, uint64) bool) {
		var start, n uint64
		for ci, c := range s.list() {
			if c == nil {
				continue
			}
			base := uint64(ci) << chunkShift
			for off, cnt := range c.Runs() {
				b := base + uint64(off)
				if n > 0 && start+n == b {
					n += uint64(cnt) // continues a run across a chunk boundary
					continue
				}
				if n > 0 && !yield(start, n) {
					return
				}
				start, n = b, uint64(cnt)
			}
		}
		if n > 0 {
			yield(start, n)
		}
	}
}

// Clone returns a copy of s (atomic per word).
func (s *blockSet) Clone() *blockSet {
	c := newBlockSet()
	l := s.list()
	n := make([]*bitmap.Bitmap, len(l))
	for i, b := range l {
		if b != nil {
			n[i] = b.Clone()
		}
	}
	c.chunks.Store(&n)
	return c
}
