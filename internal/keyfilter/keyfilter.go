// Package keyfilter is a Bloom filter over byte-string keys that grows as
// keys are added and answers queries while keys are being added.
//
// A Filter never forgets a key: MayContain(k) is true for every k ever
// added (no false negatives), and for a key never added it is true with a
// small probability (about 1% per generation, see below). Keys cannot be
// removed; a set that loses many keys keeps answering "maybe" for them
// until the Filter is rebuilt.
//
// Growth: the filter is a list of generations, each a plain Bloom filter
// of bitsPerKey bits per key for a fixed number of keys, twice as many as
// the generation before. Keys go into the newest generation until it holds
// its number, then a new generation is started. A query probes every
// generation, so a filter of n keys has about log2(n/firstCapacity)
// generations and a false-positive rate of about that many times one
// generation's. Memory is bitsPerKey/8 bytes per key of capacity: 1.25
// bytes per key when the newest generation is full, up to 2.5 right after
// one starts.
//
// Concurrency: Add takes the filter's mutex; MayContain takes no lock (the
// generation list is published with an atomic pointer and bits are set
// and read atomically), so it sees every Add that returned before it
// started.
package keyfilter

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
)

const (
	bitsPerKey    = 10 // with probes = 7: about 0.8% false positives
	probes        = 7
	firstCapacity = 1 << 16
)

// Filter is a growable Bloom filter; see the package documentation. The
// zero value is not usable: use New.
type Filter struct {
	seed maphash.Seed
	gens atomic.Pointer[[]*generation] // oldest first; replaced, never changed

	mu    sync.Mutex // serialises Add
	count int        // keys added to the newest generation
	keys  int64      // keys added in all
}

// generation is one fixed-size Bloom filter.
type generation struct {
	words    []atomic.Uint64
	bits     uint64 // len(words) * 64
	capacity int    // keys it takes before the next generation starts
}

func newGeneration(capacity int) *generation {
	words := (uint64(capacity)*bitsPerKey + 63) / 64
	return &generation{words: make([]atomic.Uint64, words), bits: words * 64, capacity: capacity}
}

// bit maps the i-th probe of a key to one of g's bits: double hashing,
// then a multiply-shift onto [0, bits) (no power-of-two rounding).
func (g *generation) bit(h1, h2, i uint64) uint64 {
	hi, _ := bits.Mul64(h1+i*h2, g.bits)
	return hi
}

// New returns an empty filter.
func New() *Filter {
	f := &Filter{seed: maphash.MakeSeed()}
	gens := []*generation{newGeneration(firstCapacity)}
	f.gens.Store(&gens)
	return f
}

// hashes returns the two hashes double hashing derives the probes from.
func (f *Filter) hashes(key []byte) (h1, h2 uint64) {
	h := maphash.Bytes(f.seed, key)
	return h, (h>>32 | h<<32) | 1
}

// Add adds key. A key the filter already reports (added before, or a
// false positive) takes no room, so the filter grows with the distinct
// keys added, not with the calls: a database that overwrites the same
// keys forever keeps a filter of constant size.
func (f *Filter) Add(key []byte) {
	h1, h2 := f.hashes(key)
	f.mu.Lock()
	defer f.mu.Unlock()
	gens := *f.gens.Load()
	for _, g := range gens {
		if g.has(h1, h2) {
			return
		}
	}
	g := gens[len(gens)-1]
	if f.count >= g.capacity {
		g = newGeneration(2 * g.capacity)
		next := append(gens[:len(gens):len(gens)], g)
		f.gens.Store(&next)
		f.count = 0
	}
	for i := range uint64(probes) {
		bit := g.bit(h1, h2, i)
		g.words[bit/64].Or(1 << (bit % 64))
	}
	f.count++
	f.keys++
}

// MayContain reports whether key may have been added: always true if it
// was, rarely true if it was not.
func (f *Filter) MayContain(key []byte) bool {
	h1, h2 := f.hashes(key)
	for _, g := range *f.gens.Load() {
		if g.has(h1, h2) {
			return true
		}
	}
	return false
}

func (g *generation) has(h1, h2 uint64) bool {
	for i := range uint64(probes) {
		bit := g.bit(h1, h2, i)
		if g.words[bit/64].Load()&(1<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}

// Keys returns how many keys took room in the filter (see Add).
func (f *Filter) Keys() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys
}

// Bytes returns the memory the filter's bits take.
func (f *Filter) Bytes() int64 {
	var n int64
	for _, g := range *f.gens.Load() {
		n += int64(len(g.words)) * 8
	}
	return n
}
