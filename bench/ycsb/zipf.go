// Package ycsb holds YCSB's request generators, key naming and workload
// definitions (core workloads A-F), independent of any storage engine.
package ycsb

import (
	"math"
	"math/rand/v2"
	"sync"
)

// ZipfianConstant is YCSB's default zipfian theta.
const ZipfianConstant = 0.99

// Generator draws item numbers.
type Generator interface {
	// Next returns the next item number.
	Next(r *rand.Rand) uint64
}

// Zipfian draws integers in [0, n) with YCSB's ZipfianGenerator (Gray et
// al., "Quickly generating billion-record synthetic databases", SIGMOD
// 1994); item 0 is the most popular. It is not safe for concurrent use;
// give each client its own (zeta values are cached, so copies are cheap).
type Zipfian struct {
	n                     uint64
	theta, alpha, zeta2   float64
	zetan, eta, halfPowTh float64
}

var zetaCache sync.Map // zetaKey -> float64

type zetaKey struct {
	n     uint64
	theta float64
}

// Zeta returns sum_{i=1..n} 1/i^theta (memoised: the O(n) sum is the cost
// of building a generator over millions of items).
func Zeta(n uint64, theta float64) float64 {
	if v, ok := zetaCache.Load(zetaKey{n, theta}); ok {
		return v.(float64)
	}
	s := zetaFrom(0, n, theta, 0)
	zetaCache.Store(zetaKey{n, theta}, s)
	return s
}

// zetaFrom extends sum (over items 1..from) to items 1..to.
func zetaFrom(from, to uint64, theta, sum float64) float64 {
	for i := from; i < to; i++ {
		sum += 1 / math.Pow(float64(i+1), theta)
	}
	return sum
}

// NewZipfian returns a zipfian generator over [0, n) with constant theta.
func NewZipfian(n uint64, theta float64) *Zipfian {
	if n < 1 {
		n = 1
	}
	z := &Zipfian{theta: theta, alpha: 1 / (1 - theta), zeta2: Zeta(2, theta), halfPowTh: math.Pow(0.5, theta)}
	z.n = n
	z.zetan = Zeta(n, theta)
	z.eta = z.computeEta()
	return z
}

func (z *Zipfian) computeEta() float64 {
	return (1 - math.Pow(2/float64(z.n), 1-z.theta)) / (1 - z.zeta2/z.zetan)
}

// N is the number of items.
func (z *Zipfian) N() uint64 { return z.n }

// Grow extends the item space to n items (YCSB recomputes zeta
// incrementally when the item count grows, as the latest distribution
// needs); shrinking is ignored.
func (z *Zipfian) Grow(n uint64) {
	if n <= z.n {
		return
	}
	z.zetan = zetaFrom(z.n, n, z.theta, z.zetan)
	z.n = n
	z.eta = z.computeEta()
}

// Next returns a zipfian item in [0, n).
func (z *Zipfian) Next(r *rand.Rand) uint64 {
	u := r.Float64()
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < 1+z.halfPowTh {
		return 1 % z.n
	}
	v := uint64(float64(z.n) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	if v >= z.n {
		v = z.n - 1
	}
	return v
}

// Prob returns the theoretical probability of item i (0-based) under a
// pure zipfian law with this generator's n and theta: 1/((i+1)^theta*zetan).
func (z *Zipfian) Prob(i uint64) float64 {
	return 1 / (math.Pow(float64(i+1), z.theta) * z.zetan)
}

// Uniform draws integers in [0, n).
type Uniform struct{ N uint64 }

// Next returns a uniform item.
func (u Uniform) Next(r *rand.Rand) uint64 { return r.Uint64N(u.N) }

// ScrambledZipfian is a zipfian distribution whose popular items are
// spread over the key space by an FNV-based permutation, as YCSB's
// ScrambledZipfianGenerator spreads them with FNV-1a. YCSB computes
// fnv64(rank) mod n, which is not a bijection (some keys collide, some
// are never drawn); this one is (a Feistel network keyed by FNV-1a with
// cycle walking), so the popularity of each key follows the zipfian law
// exactly while the hot keys are still scattered.
type ScrambledZipfian struct {
	Z    *Zipfian
	Perm *Permutation
}

// NewScrambledZipfian returns a scrambled zipfian generator over [0, n).
func NewScrambledZipfian(n uint64, theta float64) *ScrambledZipfian {
	return &ScrambledZipfian{Z: NewZipfian(n, theta), Perm: NewPermutation(n)}
}

// Next returns a scrambled zipfian item in [0, n).
func (s *ScrambledZipfian) Next(r *rand.Rand) uint64 { return s.Perm.Map(s.Z.Next(r)) }

// Permutation is a bijection of [0, n) built from FNV-1a: a 4-round
// balanced Feistel network over the smallest even bit width covering n,
// with cycle walking to stay inside [0, n).
type Permutation struct {
	n           uint64
	halfBits    uint
	mask        uint64
	roundsSeeds [4]uint64
}

// NewPermutation returns the FNV-keyed permutation of [0, n).
func NewPermutation(n uint64) *Permutation {
	bits := uint(1)
	for bits < 64 && uint64(1)<<bits < n {
		bits++
	}
	if bits%2 == 1 {
		bits++
	}
	if bits < 2 {
		bits = 2
	}
	p := &Permutation{n: n, halfBits: bits / 2}
	p.mask = uint64(1)<<p.halfBits - 1
	for i := range p.roundsSeeds {
		p.roundsSeeds[i] = FNVHash64(uint64(i) + 0x9e3779b97f4a7c15)
	}
	return p
}

// Map returns the image of x (x < n).
func (p *Permutation) Map(x uint64) uint64 {
	if p.n <= 1 {
		return 0
	}
	for {
		x = p.feistel(x)
		if x < p.n {
			return x
		}
	}
}

func (p *Permutation) feistel(x uint64) uint64 {
	l, r := x>>p.halfBits, x&p.mask
	for _, s := range p.roundsSeeds {
		l, r = r, l^(FNVHash64(r^s)&p.mask)
	}
	return l<<p.halfBits | r
}

// FNV-1a 64 as YCSB's Utils.fnvhash64: the value's 8 bytes, low first.
const (
	fnvOffsetBasis64 = 0xCBF29CE484222325
	fnvPrime64       = 1099511628211
)

// FNVHash64 is YCSB's fnvhash64 without its final Math.abs.
func FNVHash64(v uint64) uint64 {
	h := uint64(fnvOffsetBasis64)
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= fnvPrime64
		v >>= 8
	}
	return h
}

// KeyName is YCSB's CoreWorkload.buildKeyName with hashed (unordered)
// inserts: "user" followed by the decimal FNV-1a hash of the key number
// (made non-negative as Java's Math.abs does).
func KeyName(keynum uint64) []byte { return AppendKeyName(nil, keynum) }

// AppendKeyName appends KeyName(keynum) to dst.
func AppendKeyName(dst []byte, keynum uint64) []byte {
	h := int64(FNVHash64(keynum))
	if h < 0 {
		h = -h // Math.abs; MinInt64 stays negative in Java too: keep its bits
	}
	dst = append(dst, "user"...)
	return appendUint(dst, uint64(h))
}

func appendUint(dst []byte, v uint64) []byte {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}
