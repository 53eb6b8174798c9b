package heapkv

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"testing"
)

// The entry cache's bookkeeping: in every shard, the records from tail to
// head parse, every map slot points at one of them whose key has the
// slot's hash, no write is left in progress, and the shard stays within
// its budget, through fills (also of a key already cached), evictions,
// wraps of the ring and invalidations, ended with the write's entry
// stored (storeEnd, which get then returns, written over the key's record
// when it has the same length) or without (end); a fill
// under a token taken before a write began, or while it runs, is refused.
func TestEntryCacheAccounting(t *testing.T) {
	for _, tc := range []struct {
		size      int64
		keys, ops int
	}{
		{64 << 10, 2000, 20000},  // rings of 680 bytes: many wraps
		{4 << 20, 60000, 300000}, // rings that grow from 4 KiB to 43,688 bytes, then wrap
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) { testEntryCacheAccounting(t, tc.size, tc.keys, tc.ops) })
	}
}

func testEntryCacheAccounting(t *testing.T, size int64, keys, ops int) {
	c := newEntryCache(size)
	check := func() {
		t.Helper()
		for i := range c.shards {
			s := &c.shards[i]
			size := uint64(len(s.ring))
			live := map[uint64]bool{} // positions of parsed records
			for pos := s.tail; pos < s.head; {
				off := pos % size
				if size-off < entryHeader || binary.LittleEndian.Uint32(s.ring[off+8:]) == padMark {
					pos += size - off
					continue
				}
				r := s.ring[off:]
				k, n := binary.LittleEndian.Uint32(r[8:]), binary.LittleEndian.Uint32(r[12:])&lenMask
				if h := maphash.Bytes(c.seed, r[entryHeader:entryHeader+k]); h != binary.LittleEndian.Uint64(r) {
					t.Fatalf("shard %d: record at %d has hash %x, its key %x", i, pos, binary.LittleEndian.Uint64(r), h)
				}
				live[pos] = true
				pos += recordLen(int(k), int(n))
			}
			for h, pos := range s.slots {
				if !live[pos] || binary.LittleEndian.Uint64(s.ring[pos%size:]) != h {
					t.Fatalf("shard %d: slot %x points at %d, not a record of its hash (tail %d head %d)", i, h, pos, s.tail, s.head)
				}
			}
			if s.head-s.tail > size || s.bytes() > c.perShard || s.writing != 0 {
				t.Fatalf("shard %d: %d ring bytes of %d, %d bytes held, budget %d, %d writes in progress",
					i, s.head-s.tail, size, s.bytes(), c.perShard, s.writing)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() []byte { return fmt.Appendf(nil, "k%06d", rng.IntN(keys)) }
	writes := map[string]int{}
	seed := maphash.MakeSeed()
	entry := func(k []byte) []byte {
		var kh maphash.Hash
		kh.SetSeed(seed)
		kh.Write(k)
		r := rand.New(rand.NewPCG(uint64(writes[string(k)]), kh.Sum64()))
		n := r.IntN(200)
		if r.IntN(3) > 0 {
			n = int(kh.Sum64() % 200) // the key's usual length: a write may overwrite in place
		}
		e := make([]byte, n)
		for i := range e {
			e[i] = byte(r.Uint32())
		}
		return e
	}
	inPlace := 0
	for range ops {
		k := key()
		switch rng.IntN(4) {
		case 0, 1:
			// A key's entry changes only with a write (begin): entries are
			// a function of the key and its write count.
			tok := c.token(k)
			e := entry(k)
			c.fill(k, e, tok)
			if rng.IntN(2) == 0 {
				c.fill(k, e, tok) // a second Get's fill
			}
		case 2:
			s, _ := c.shard(k)
			head := s.head
			c.begin(k)
			writes[string(k)]++
			if rng.IntN(2) == 0 {
				c.end(k) // a write whose commit failed
				break
			}
			// A write the index took, its entry stored (write-through).
			e := entry(k)
			c.storeEnd(k, e)
			got, ok := c.get(k, nil)
			if fits := recordLen(len(k), len(e)) <= uint64(c.maxRing)/4; ok != fits || ok && string(got) != string(e) {
				t.Fatalf("get %s right after storeEnd: %x, %v; want %x, %v", k, got, ok, e, fits)
			}
			if ok && s.head == head {
				inPlace++ // storeEnd overwrote the key's record
			}
		default:
			if got, ok := c.get(k, nil); ok && string(got) != string(entry(k)) {
				t.Fatalf("get %s after %d writes: %x, want %x", k, writes[string(k)], got, entry(k))
			}
		}
		if rng.IntN(ops/40) == 0 {
			check()
		}
	}
	check()
	if inPlace < ops/200 {
		t.Fatalf("only %d of %d ops stored a write's entry over the key's record", inPlace, ops)
	}
	wrapped := 0
	for i := range c.shards {
		if s := &c.shards[i]; len(s.ring) == c.maxRing && s.head > uint64(c.maxRing) {
			wrapped++
		}
	}
	if wrapped < entryShards/2 {
		t.Fatalf("only %d of %d shards grew to their whole ring and wrapped", wrapped, entryShards)
	}
	moved := int64(0)
	for i := range c.shards {
		moved += c.shards[i].moved
	}
	if moved < int64(ops/100) {
		t.Fatalf("only %d records were given a second chance in %d ops", moved, ops)
	}

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

// A record that gets find is given a second chance when the tail reaches
// it: a key read between every fill of new keys stays cached through many
// turns of its shard's ring, where a FIFO ring dropped it after one, and
// keys that are never read leave in the order they came.
func TestEntryCacheSecondChance(t *testing.T) {
	c := newEntryCache(64 << 10) // rings of 680 bytes, 14 slots
	s0 := &c.shards[0]
	var keys [][]byte // keys of shard 0
	for i := 0; len(keys) < 300; i++ {
		k := fmt.Appendf(nil, "k%06d", i)
		if s, _ := c.shard(k); s == s0 {
			keys = append(keys, k)
		}
	}
	entry := []byte("0123456789abcdef0123")
	fill := func(k []byte) { c.fill(k, entry, c.token(k)) }
	hot := keys[0]
	fill(hot)
	for i, k := range keys[1:] {
		if v, ok := c.get(hot, nil); !ok || string(v) != string(entry) {
			t.Fatalf("the key read before every fill was evicted after %d fills (%d records given a second chance)", i, s0.moved)
		}
		fill(k)
	}
	if s0.tail <= uint64(len(s0.ring))*10 {
		t.Fatalf("the ring turned only %d times", s0.tail/uint64(len(s0.ring)))
	}
	if _, ok := c.get(keys[1], nil); ok {
		t.Fatal("a key never read outlived the whole ring")
	}
	if _, ok := c.get(keys[len(keys)-1], nil); !ok {
		t.Fatal("the newest key is not cached")
	}
}
