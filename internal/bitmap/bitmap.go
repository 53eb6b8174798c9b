// Package bitmap provides Bitmap, a fixed-size bitmap stored in atomic 64-bit
// words.
//
// Every method that reads or writes bits does so with atomic word operations,
// so any number of goroutines may use one Bitmap at the same time without a
// lock and without tripping the race detector. That is what heapkv needs: in
// the allocator one goroutine (the owner of a segment) sets bits while any
// goroutine may clear them; in the mirror package writers mark tracking bits
// while a resync clears them.
//
// Single-bit and single-word updates are atomic. Multi-word operations
// (SetRange, ClearRange, Count, FindClearRun, Clone, AppendWords, …) are
// atomic per word only: run concurrently with writers they see each word at
// some moment, not the whole bitmap at one moment. Callers that need a
// consistent picture of several words must exclude writers themselves.
//
// Bit i lives in word i/64 at bit position i%64 (least significant first).
// Bits at positions >= Len in the last word are always zero.
//
// Indices out of range are programmer errors and panic, like slice indexing.
package bitmap

import (
	"fmt"
	"iter"
	"math/bits"
	"sync/atomic"
)

// Bitmap is a fixed-size set of bits, safe for concurrent use.
// The zero value is an empty bitmap of length 0; use New for a useful one.
// A Bitmap must not be copied after first use.
type Bitmap struct {
	n     int
	words []atomic.Uint64
}

// New returns a bitmap of n bits, all clear. It panics if n < 0.
func New(n int) *Bitmap {
	if n < 0 {
		panic(fmt.Sprintf("bitmap: negative length %d", n))
	}
	return &Bitmap{n: n, words: make([]atomic.Uint64, wordsFor(n))}
}

// FromWords returns a bitmap of n bits whose words are a copy of words, the
// inverse of AppendWords. It returns an error (never panics) if len(words) is
// not the number of words n bits need, or if a bit at position >= n is set.
func FromWords(n int, words []uint64) (*Bitmap, error) {
	if n < 0 {
		return nil, fmt.Errorf("bitmap: negative length %d", n)
	}
	if len(words) != wordsFor(n) {
		return nil, fmt.Errorf("bitmap: %d words for %d bits, want %d", len(words), n, wordsFor(n))
	}
	if r := n % 64; r != 0 && words[len(words)-1]>>r != 0 {
		return nil, fmt.Errorf("bitmap: bits set beyond length %d", n)
	}
	b := New(n)
	for i, w := range words {
		b.words[i].Store(w)
	}
	return b, nil
}

// WordsFor returns the number of 64-bit words that hold n bits.
func WordsFor(n int) int { return wordsFor(n) }

func wordsFor(n int) int { return (n + 63) / 64 }

// Len returns the number of bits in b.
func (b *Bitmap) Len() int { return b.n }

func (b *Bitmap) check(i int) {
	if i < 0 || i >= b.n {
		panic(fmt.Sprintf("bitmap: index %d out of range [0,%d)", i, b.n))
	}
}

func (b *Bitmap) checkRange(i, n int) {
	if i < 0 || n < 0 || i > b.n || n > b.n-i {
		panic(fmt.Sprintf("bitmap: range [%d,+%d) out of range [0,%d)", i, n, b.n))
	}
}

// Test reports whether bit i is set.
func (b *Bitmap) Test(i int) bool {
	b.check(i)
	return b.words[i/64].Load()&(1<<(uint(i)%64)) != 0
}

// Set sets bit i and reports whether it was already set.
func (b *Bitmap) Set(i int) bool {
	b.check(i)
	m := uint64(1) << (uint(i) % 64)
	return b.words[i/64].Or(m)&m != 0
}

// Clear clears bit i and reports whether it was set.
func (b *Bitmap) Clear(i int) bool {
	b.check(i)
	m := uint64(1) << (uint(i) % 64)
	return b.words[i/64].And(^m)&m != 0
}

// mask returns the bits [lo, hi) of a word, 0 <= lo < hi <= 64.
func mask(lo, hi uint) uint64 {
	if hi-lo == 64 {
		return ^uint64(0)
	}
	return (uint64(1)<<(hi-lo) - 1) << lo
}

// forWords calls fn(word index, mask) for each word that bits [i, i+n) touch.
func forWords(i, n int, fn func(w int, m uint64)) {
	end := i + n
	for i < end {
		w := i / 64
		lo := uint(i) % 64
		hi := uint(64)
		if wend := (w + 1) * 64; end < wend {
			hi = uint(end - w*64)
		}
		fn(w, mask(lo, hi))
		i = (w + 1) * 64
	}
}

// SetRange sets bits [i, i+n) and returns how many of them were already set.
func (b *Bitmap) SetRange(i, n int) (alreadySet int) {
	b.checkRange(i, n)
	if lo := uint(i) % 64; n > 0 && int(lo)+n <= 64 { // one word: the common case
		m := mask(lo, lo+uint(n))
		return bits.OnesCount64(b.words[i/64].Or(m) & m)
	}
	forWords(i, n, func(w int, m uint64) {
		alreadySet += bits.OnesCount64(b.words[w].Or(m) & m)
	})
	return alreadySet
}

// ClearRange clears bits [i, i+n) and returns how many of them were set.
func (b *Bitmap) ClearRange(i, n int) (wasSet int) {
	b.checkRange(i, n)
	if lo := uint(i) % 64; n > 0 && int(lo)+n <= 64 { // one word: the common case
		m := mask(lo, lo+uint(n))
		return bits.OnesCount64(b.words[i/64].And(^m) & m)
	}
	forWords(i, n, func(w int, m uint64) {
		wasSet += bits.OnesCount64(b.words[w].And(^m) & m)
	})
	return wasSet
}

// CountRange returns the number of set bits in [i, i+n).
func (b *Bitmap) CountRange(i, n int) int {
	b.checkRange(i, n)
	c := 0
	forWords(i, n, func(w int, m uint64) {
		c += bits.OnesCount64(b.words[w].Load() & m)
	})
	return c
}

// AllSet reports whether every bit in [i, i+n) is set (true for n == 0).
func (b *Bitmap) AllSet(i, n int) bool { return b.CountRange(i, n) == n }

// NoneSet reports whether every bit in [i, i+n) is clear (true for n == 0).
func (b *Bitmap) NoneSet(i, n int) bool { return b.CountRange(i, n) == 0 }

// Count returns the number of set bits.
func (b *Bitmap) Count() int {
	c := 0
	for i := range b.words {
		c += bits.OnesCount64(b.words[i].Load())
	}
	return c
}

// NextSet returns the index of the first set bit at or after i, or -1 if
// there is none. i may be anything from 0 to Len.
func (b *Bitmap) NextSet(i int) int {
	b.checkRange(i, 0)
	if j := b.nextSet(i, b.n); j < b.n {
		return j
	}
	return -1
}

// NextClear returns the index of the first clear bit at or after i, or -1 if
// there is none. i may be anything from 0 to Len.
func (b *Bitmap) NextClear(i int) int {
	b.checkRange(i, 0)
	if j := b.nextClear(i); j < b.n {
		return j
	}
	return -1
}

// nextSet returns the first set bit in [i, limit), or limit if there is none.
// REQUIRES: 0 <= i <= limit <= b.n.
func (b *Bitmap) nextSet(i, limit int) int {
	for i < limit {
		w := i / 64
		x := b.words[w].Load() >> (uint(i) % 64)
		if x != 0 {
			return min(i+bits.TrailingZeros64(x), limit)
		}
		i = (w + 1) * 64
	}
	return limit
}

// nextClear returns the first clear bit at or after i, or b.n if there is
// none. REQUIRES: 0 <= i <= b.n.
func (b *Bitmap) nextClear(i int) int {
	for i < b.n {
		w := i / 64
		x := ^b.words[w].Load() >> (uint(i) % 64)
		if x != 0 {
			// Bits beyond b.n are zero, so they look clear; clamp.
			return min(i+bits.TrailingZeros64(x), b.n)
		}
		i = (w + 1) * 64
	}
	return b.n
}

// FindClearRun returns the start of the first run of n clear bits that begins
// at or after from, or -1 if there is none. It works a word at a time: for
// n <= 64 it loads each word once; for longer runs it costs one or two word
// loads per clear run it skips. It panics if n < 1;
// from may be anything (negative means 0).
func (b *Bitmap) FindClearRun(from, n int) int {
	if n < 1 {
		panic(fmt.Sprintf("bitmap: FindClearRun of %d bits", n))
	}
	i := max(from, 0)
	if n <= 64 {
		return b.findSmallClearRun(i, n)
	}
	for i <= b.n-n {
		s := b.nextClear(i)
		if s > b.n-n {
			return -1
		}
		e := b.nextSet(s, s+n)
		if e == s+n {
			return s
		}
		i = e + 1 // bit e is set; no run can start at or before it
	}
	return -1
}

// findSmallClearRun is FindClearRun for 1 <= n <= 64 and from >= 0. It
// looks at each word once: a run either starts within a word (found with
// shift-and: bit i of p stays set only if bits i..i+n-1 are all clear) or
// continues a run of clear bits from the top of the previous words (tail).
func (b *Bitmap) findSmallClearRun(from, n int) int {
	tail := 0 // clear bits that end at the top of the previous word
	for w := from / 64; w < len(b.words); w++ {
		base := w * 64
		x := b.words[w].Load()
		if w == from/64 {
			x |= uint64(1)<<(uint(from)%64) - 1 // bits before from count as set
		}
		if end := b.n - base; end < 64 {
			x |= ^uint64(0) << uint(end) // so do bits beyond Len
		}
		if tail+bits.TrailingZeros64(x) >= n {
			return base - tail
		}
		p := ^x
		for covered := 1; covered < n && p != 0; {
			s := min(covered, n-covered)
			p &= p >> uint(s)
			covered += s
		}
		if p != 0 {
			return base + bits.TrailingZeros64(p)
		}
		tail = bits.LeadingZeros64(x)
	}
	return -1
}

// Ones returns an iterator over the indices of the set bits, in increasing
// order.
func (b *Bitmap) Ones() iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := b.nextSet(0, b.n); i < b.n; i = b.nextSet(i+1, b.n) {
			if !yield(i) {
				return
			}
		}
	}
}

// Runs returns an iterator over the maximal runs of set bits as (start,
// length) pairs, in increasing order.
func (b *Bitmap) Runs() iter.Seq2[int, int] {
	return func(yield func(int, int) bool) {
		for i := b.nextSet(0, b.n); i < b.n; {
			e := b.nextClear(i)
			if !yield(i, e-i) {
				return
			}
			i = b.nextSet(e, b.n)
		}
	}
}

// ClearRuns returns an iterator over the maximal runs of clear bits as
// (start, length) pairs, in increasing order. It loads each word once and
// finds the runs' ends within a word with bit tricks, so a bitmap of many
// short runs costs a few nanoseconds a run.
func (b *Bitmap) ClearRuns() iter.Seq2[int, int] {
	return func(yield func(int, int) bool) {
		start := -1 // start of the clear run still open, or -1
		for w := range b.words {
			x, base := b.words[w].Load(), w*64
			switch x {
			case 0:
				if start < 0 {
					start = base
				}
				continue
			case ^uint64(0):
				if start >= 0 && !yield(start, base-start) {
					return
				}
				start = -1
				continue
			}
			for i := 0; ; {
				if start < 0 {
					y := ^x >> uint(i)
					if y == 0 {
						break
					}
					i += bits.TrailingZeros64(y)
					start = base + i
				}
				y := x >> uint(i)
				if y == 0 {
					break // the run goes on into the next word
				}
				i += bits.TrailingZeros64(y)
				if !yield(start, base+i-start) {
					return
				}
				start = -1
			}
		}
		// Bits beyond Len are clear; a run open at the end stops at Len.
		if start >= 0 && start < b.n {
			yield(start, b.n-start)
		}
	}
}

// Clone returns a copy of b (atomic per word; see the package comment).
func (b *Bitmap) Clone() *Bitmap {
	c := New(b.n)
	for i := range b.words {
		c.words[i].Store(b.words[i].Load())
	}
	return c
}

// AppendWords appends the words of b to dst and returns the result; bit i is
// bit i%64 of word i/64. FromWords is the inverse.
func (b *Bitmap) AppendWords(dst []uint64) []uint64 {
	for i := range b.words {
		dst = append(dst, b.words[i].Load())
	}
	return dst
}

// Word returns word w (bits [64w, 64w+64)). It panics if w is out of range.
func (b *Bitmap) Word(w int) uint64 { return b.words[w].Load() }

// Equal reports whether b and o have the same length and the same bits.
func (b *Bitmap) Equal(o *Bitmap) bool {
	if b.n != o.n {
		return false
	}
	for i := range b.words {
		if b.words[i].Load() != o.words[i].Load() {
			return false
		}
	}
	return true
}

// String formats b as its runs of set bits, e.g. "{0-3 9 12-13}"; meant for
// tests and debugging.
func (b *Bitmap) String() string {
	s := []byte{'{'}
	for start, n := range b.Runs() {
		if len(s) > 1 {
			s = append(s, ' ')
		}
		s = fmt.Appendf(s, "%d", start)
		if n > 1 {
			s = fmt.Appendf(s, "-%d", start+n-1)
		}
	}
	return string(append(s, '}'))
}
