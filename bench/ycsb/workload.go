package ycsb

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
)

// Op is a YCSB operation type.
type Op int

// Operation types.
const (
	OpRead Op = iota
	OpUpdate
	OpInsert
	OpScan
	OpRMW
	NumOps
)

var opNames = [NumOps]string{"READ", "UPDATE", "INSERT", "SCAN", "READ-MODIFY-WRITE"}

// String returns the operation's name as YCSB prints it (READ, UPDATE, ...).
func (o Op) String() string {
	if o >= 0 && o < NumOps {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Distribution names a request distribution.
type Distribution string

// Request distributions.
const (
	DistUniform Distribution = "uniform"
	DistZipfian Distribution = "zipfian" // scrambled, as YCSB's "zipfian"
	DistLatest  Distribution = "latest"
)

// Workload is a YCSB core workload: operation proportions and request
// distribution.
type Workload struct {
	Name         string
	Proportions  [NumOps]float64
	Distribution Distribution
	// MaxScanLength: scan lengths are uniform in [1, MaxScanLength].
	MaxScanLength int
}

// Standard returns the core workload named a..f (case-insensitive).
func Standard(name string) (Workload, error) {
	w := Workload{Name: strings.ToUpper(name), Distribution: DistZipfian, MaxScanLength: 100}
	p := &w.Proportions
	switch strings.ToLower(name) {
	case "a":
		p[OpRead], p[OpUpdate] = 0.5, 0.5
	case "b":
		p[OpRead], p[OpUpdate] = 0.95, 0.05
	case "c":
		p[OpRead] = 1
	case "d":
		p[OpRead], p[OpInsert] = 0.95, 0.05
		w.Distribution = DistLatest
	case "e":
		p[OpScan], p[OpInsert] = 0.95, 0.05
	case "f":
		p[OpRead], p[OpRMW] = 0.5, 0.5
	default:
		return Workload{}, fmt.Errorf("ycsb: unknown workload %q (want a-f)", name)
	}
	return w, nil
}

// ParseMix parses a custom mix "read=0.5,update=0.3,insert=0.1,scan=0.05,rmw=0.05"
// (proportions are normalised).
func ParseMix(s string) ([NumOps]float64, error) {
	var p [NumOps]float64
	var sum float64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return p, fmt.Errorf("ycsb: mix entry %q: want op=proportion", part)
		}
		var f float64
		if _, err := fmt.Sscan(v, &f); err != nil || f < 0 {
			return p, fmt.Errorf("ycsb: mix entry %q: bad proportion", part)
		}
		switch strings.ToLower(k) {
		case "read":
			p[OpRead] += f
		case "update":
			p[OpUpdate] += f
		case "insert":
			p[OpInsert] += f
		case "scan":
			p[OpScan] += f
		case "rmw", "readmodifywrite":
			p[OpRMW] += f
		default:
			return p, fmt.Errorf("ycsb: mix entry %q: unknown op", part)
		}
		sum += f
	}
	if sum <= 0 {
		return p, fmt.Errorf("ycsb: mix %q has no operations", s)
	}
	for i := range p {
		p[i] /= sum
	}
	return p, nil
}

// OpChooser draws operations with fixed proportions.
type OpChooser struct {
	cum [NumOps]float64
}

// NewOpChooser returns a chooser for proportions p (need not sum to 1).
func NewOpChooser(p [NumOps]float64) *OpChooser {
	var c OpChooser
	var s float64
	for i, v := range p {
		s += v
		c.cum[i] = s
	}
	for i := range c.cum {
		c.cum[i] /= s
	}
	return &c
}

// Next draws an operation.
func (c *OpChooser) Next(r *rand.Rand) Op {
	u := r.Float64()
	for i, v := range c.cum {
		if u < v {
			return Op(i)
		}
	}
	for i := NumOps - 1; i >= 0; i-- { // rounding: last non-empty op
		if i == 0 || c.cum[i] > c.cum[i-1] {
			return i
		}
	}
	return OpRead
}

// Keyspace tracks the key numbers inserted so far, shared by all clients
// of a run: inserts take the next number, and requests only go to keys
// whose insert has been acknowledged (YCSB's AcknowledgedCounterGenerator),
// so that a read never asks for a key still being written.
type Keyspace struct {
	next  atomic.Uint64 // next key number to insert
	limit atomic.Uint64 // keys [0, limit) are all acknowledged

	mu      sync.Mutex
	pending map[uint64]bool
}

// NewKeyspace returns a keyspace whose keys [0, n) already exist.
func NewKeyspace(n uint64) *Keyspace {
	k := &Keyspace{pending: map[uint64]bool{}}
	k.next.Store(n)
	k.limit.Store(n)
	return k
}

// NextInsert allocates the key number for an insert.
func (k *Keyspace) NextInsert() uint64 { return k.next.Add(1) - 1 }

// Ack marks the insert of keynum complete.
func (k *Keyspace) Ack(keynum uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.limit.Load()
	if keynum != l {
		k.pending[keynum] = true
		return
	}
	l++
	for k.pending[l] {
		delete(k.pending, l)
		l++
	}
	k.limit.Store(l)
}

// Limit is the number of keys known to exist ([0, Limit)).
func (k *Keyspace) Limit() uint64 { return k.limit.Load() }

// KeyChooser draws existing key numbers with a workload's distribution.
// One per client: not safe for concurrent use.
type KeyChooser struct {
	dist Distribution
	ks   *Keyspace
	z    *Zipfian
	perm *Permutation
	n    uint64 // item count the zipfian was built for
}

// NewKeyChooser returns a chooser over ks. For zipfian, YCSB sizes the
// generator for the records expected at the end of the run
// (recordcount + expected inserts) so that new keys can be drawn too;
// expectedInserts does that here.
func NewKeyChooser(d Distribution, ks *Keyspace, expectedInserts uint64) (*KeyChooser, error) {
	c := &KeyChooser{dist: d, ks: ks}
	n := ks.Limit()
	if n == 0 {
		n = 1
	}
	switch d {
	case DistUniform:
	case DistZipfian:
		c.n = n + expectedInserts
		c.z = NewZipfian(c.n, ZipfianConstant)
		c.perm = NewPermutation(c.n)
	case DistLatest:
		c.n = n
		c.z = NewZipfian(n, ZipfianConstant)
	default:
		return nil, fmt.Errorf("ycsb: unknown distribution %q", d)
	}
	return c, nil
}

// Next draws an existing key number.
func (c *KeyChooser) Next(r *rand.Rand) uint64 {
	limit := c.ks.Limit()
	if limit == 0 {
		return 0
	}
	switch c.dist {
	case DistZipfian:
		// Redraw keys not inserted yet, as YCSB does.
		for i := 0; i < 64; i++ {
			if k := c.perm.Map(c.z.Next(r)); k < limit {
				return k
			}
		}
		return r.Uint64N(limit)
	case DistLatest:
		// SkewedLatestGenerator: the most recent insert is the most popular.
		if limit > c.z.N() {
			c.z.Grow(limit)
		}
		for {
			if off := c.z.Next(r); off < limit {
				return limit - 1 - off
			}
		}
	default:
		return r.Uint64N(limit)
	}
}
