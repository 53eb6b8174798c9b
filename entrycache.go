package heapkv

import (
	"hash/maphash"
	"sync"
)

// The index-entry cache (issue 15, item 1): the index entries (a heap
// pointer or an inline value) of keys Get read recently, so that a Get of a
// hot key skips Pebble's lookup (memtable skiplists, then table blocks).
// Only DB.Get uses it; snapshots, iterators and transactions read the index
// at their own LSN.
//
// Coherence. A write changes a key's entry in the index when its group's
// batch is committed (advance). Around that commit the applier invalidates
// every key the group writes, in two steps: before the commit (begin) it
// deletes the key's cached entry, bumps its shard's generation and counts
// the shard as being written; after the commit (end) it bumps the
// generation again and uncounts the shard. A Get that misses takes a token
// (the generation, only while the shard is not being written) before it
// reads Pebble, and fills the cache with what it read only if the shard's
// generation is still the token's and the shard is not being written. So:
//
//   - no entry older than the index is ever cached after a begin: begin
//     deleted the key's entry; a fill during a write is refused; a fill
//     after end carries a token taken after end, so its read followed the
//     commit; a fill whose read preceded the commit either landed before
//     begin (and begin deleted it) or finds the generation moved;
//   - so once a commit is done, every Get sees it (a hit is as new as the
//     index), and a Get that starts after another saw a write sees that
//     write: reads stay linearizable (linearizability_test.go).
//
// A heap pointer taken from the cache is as current as one read from the
// index, and Get pins the applied LSN before its lookup, so its extents
// are not reused under it (pins.go).

// entryShards is the number of shards: a group invalidates the shards of
// its keys, and a write blocks fills of its shard between begin and end.
const entryShards = 64

// entryOverhead is what an entry costs beyond its key and its bytes: the
// map slot, the string and slice headers.
const entryOverhead = 64

type entryShard struct {
	mu      sync.Mutex
	m       map[string][]byte
	bytes   int64
	gen     uint64 // bumped by every begin and end of a write to the shard
	writing int    // writes between begin and end
	hits    int64  // gets served
	misses  int64  // gets not served
	_       [64]byte
}

type entryCache struct {
	seed     maphash.Seed
	perShard int64 // byte budget of one shard
	shards   [entryShards]entryShard
}

// newEntryCache returns a cache of about size bytes, or nil if size <= 0.
func newEntryCache(size int64) *entryCache {
	if size <= 0 {
		return nil
	}
	c := &entryCache{seed: maphash.MakeSeed(), perShard: max(size/entryShards, 1)}
	for i := range c.shards {
		c.shards[i].m = make(map[string][]byte)
	}
	return c
}

func (c *entryCache) shard(key []byte) *entryShard {
	return &c.shards[maphash.Bytes(c.seed, key)%entryShards]
}

// get appends key's cached entry to dst and reports whether there was one.
func (c *entryCache) get(key, dst []byte) ([]byte, bool) {
	s := c.shard(key)
	s.mu.Lock()
	e, ok := s.m[string(key)]
	if ok {
		dst = append(dst, e...)
		s.hits++
	} else {
		s.misses++
	}
	s.mu.Unlock()
	return dst, ok
}

// entryToken is what a Get that missed holds while it reads the index.
type entryToken struct {
	gen uint64
	ok  bool // false: the shard was being written; the read must not fill
}

// token returns the token for a read of key from the index that starts now.
func (c *entryCache) token(key []byte) entryToken {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return entryToken{gen: s.gen, ok: s.writing == 0}
}

// fill caches entry, read from the index under tok, unless a write to the
// shard began since tok was taken. It copies entry.
func (c *entryCache) fill(key, entry []byte, tok entryToken) {
	if !tok.ok {
		return
	}
	cost := int64(len(key)+len(entry)) + entryOverhead
	if cost > c.perShard/4 {
		return // a few huge inline values would empty the shard
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != tok.gen || s.writing != 0 {
		return
	}
	if old, ok := s.m[string(key)]; ok { // another Get filled it meanwhile
		delete(s.m, string(key))
		s.bytes -= int64(len(key)+len(old)) + entryOverhead
	}
	// Evict in map order (random) until the entry fits.
	for k, e := range s.m {
		if s.bytes+cost <= c.perShard {
			break
		}
		delete(s.m, k)
		s.bytes -= int64(len(k)+len(e)) + entryOverhead
	}
	s.m[string(key)] = append([]byte(nil), entry...)
	s.bytes += cost
}

// begin is the first half of the invalidation of a written key, before the
// index holds the write: the key's entry goes, and fills of its shard stop
// until end.
func (c *entryCache) begin(key []byte) {
	s := c.shard(key)
	s.mu.Lock()
	if e, ok := s.m[string(key)]; ok {
		delete(s.m, string(key))
		s.bytes -= int64(len(key)+len(e)) + entryOverhead
	}
	s.gen++
	s.writing++
	s.mu.Unlock()
}

// end is the second half, once the index holds the write.
func (c *entryCache) end(key []byte) {
	s := c.shard(key)
	s.mu.Lock()
	s.gen++
	s.writing--
	s.mu.Unlock()
}

// stats returns the gets served and not served and the bytes held.
func (c *entryCache) stats() (hits, misses, bytes int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		hits, misses, bytes = hits+s.hits, misses+s.misses, bytes+s.bytes
		s.mu.Unlock()
	}
	return hits, misses, bytes
}

// check runs fn with key's cached entry (nil if none) under the shard's
// lock, so that no write to the shard can begin meanwhile: the cross-check
// of tests (Options.crossCheckEntryCache) compares it with the index there.
func (c *entryCache) check(key []byte, fn func(cached []byte) error) error {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(s.m[string(key)])
}
