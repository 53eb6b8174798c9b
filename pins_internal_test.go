package heapkv

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/heapkv/heapkv/internal/base"
)

// The pin set's min and count follow a model through pins and unpins of
// mostly one LSN (each shard's fast count) mixed with older and newer ones
// (its map), in any order.
func TestPinSetModel(t *testing.T) {
	p := newPinSet()
	rng := rand.New(rand.NewPCG(3, 4))
	var held []pinToken
	model := map[base.LSN]int{}
	current := base.LSN(100)
	for i := range 50000 {
		switch r := rng.IntN(10); {
		case r < 5 || len(held) == 0:
			lsn := current
			if rng.IntN(4) == 0 {
				lsn = current - base.LSN(rng.IntN(50))
			}
			var tok pinToken
			if rng.IntN(2) == 0 {
				tok = p.pin(lsn)
			} else {
				var v base.AtomicLSN
				v.Store(lsn)
				tok = p.pinLoad(&v)
			}
			held = append(held, tok)
			model[lsn]++
		case r < 9:
			j := rng.IntN(len(held))
			p.unpin(held[j])
			if model[held[j].lsn]--; model[held[j].lsn] == 0 {
				delete(model, held[j].lsn)
			}
			held[j] = held[len(held)-1]
			held = held[:len(held)-1]
		default:
			current += base.LSN(rng.IntN(3))
		}
		if i%97 == 0 {
			want, wantN := base.LSN(math.MaxUint64), 0
			for lsn, c := range model {
				want, wantN = min(want, lsn), wantN+c
			}
			if got, n := p.min(); got != want || n != wantN {
				t.Fatalf("step %d: min %d of %d pins, want %d of %d", i, got, n, want, wantN)
			}
		}
	}
	for _, tok := range held {
		p.unpin(tok)
	}
	if got, n := p.min(); got != math.MaxUint64 || n != 0 {
		t.Fatalf("all unpinned: min %d of %d pins", got, n)
	}
	for i := range p.shards {
		if s := &p.shards[i]; s.n != 0 || len(s.counts) != 0 {
			t.Fatalf("shard %d keeps %d pins of %d and %d other LSNs", i, s.n, s.lsn, len(s.counts))
		}
	}
}
