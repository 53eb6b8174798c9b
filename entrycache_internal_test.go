package heapkv

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The entry cache's bookkeeping: every shard's byte count is what its
// entries cost and within its budget, through fills (also of a key already
// cached), evictions, and invalidations; a fill under a token taken before
// a write began, or while it runs, is refused.
func TestEntryCacheAccounting(t *testing.T) {
	c := newEntryCache(64 << 10)
	check := func() {
		t.Helper()
		for i := range c.shards {
			s := &c.shards[i]
			var n int64
			for k, e := range s.m {
				n += int64(len(k)+len(e)) + entryOverhead
			}
			if n != s.bytes || s.bytes > c.perShard || s.writing != 0 {
				t.Fatalf("shard %d: %d bytes counted, %d held, budget %d, %d writes in progress", i, s.bytes, n, c.perShard, s.writing)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() []byte { return fmt.Appendf(nil, "k%04d", rng.IntN(2000)) }
	for range 20000 {
		k := key()
		switch rng.IntN(4) {
		case 0, 1:
			tok := c.token(k)
			c.fill(k, make([]byte, rng.IntN(200)), tok)
			if rng.IntN(2) == 0 {
				c.fill(k, make([]byte, rng.IntN(200)), tok) // a second Get's fill
			}
		case 2:
			c.begin(k)
			c.end(k)
		default:
			c.get(k, nil)
		}
	}
	check()

	k := []byte("stale")
	tok := c.token(k)
	c.begin(k)
	if during := c.token(k); during.ok {
		t.Fatal("a token taken while the shard is being written allows a fill")
	}
	c.fill(k, []byte("old"), tok)
	c.end(k)
	c.fill(k, []byte("old"), tok)
	if _, ok := c.get(k, nil); ok {
		t.Fatal("a fill under a token taken before a write was accepted")
	}
	tok = c.token(k)
	c.fill(k, []byte("new"), tok)
	if v, ok := c.get(k, nil); !ok || string(v) != "new" {
		t.Fatalf("a fill after the write: %q %v", v, ok)
	}
	check()
	hits, misses, _ := c.stats()
	if hits == 0 || misses == 0 {
		t.Fatalf("%d hits, %d misses", hits, misses)
	}
}
