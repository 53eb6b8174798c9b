package heapkv

import (
	"encoding/binary"
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
// hides the key's cached entry, bumps its shard's generation and counts
// the shard as being written; after the commit (end) it bumps the
// generation again and uncounts the shard. A Get that misses takes a token
// (the generation, only while the shard is not being written) before it
// reads Pebble, and fills the cache with what it read only if the shard's
// generation is still the token's and the shard is not being written. So:
//
//   - no entry older than the index is ever cached after a begin: begin
//     hid the key's entry (until storeEnd writes the new one over it or
//     elsewhere); a fill during a write is refused; a fill after end
//     carries a token taken after end, so its read followed the commit; a
//     fill whose read preceded the commit either landed before begin (and
//     begin hid it) or finds the generation moved;
//   - so once a commit is done, every Get sees it (a hit is as new as the
//     index), and a Get that starts after another saw a write sees that
//     write: reads stay linearizable (linearizability_test.go).
//
// A heap pointer taken from the cache is as current as one read from the
// index, and Get pins the applied LSN before its lookup, so its extents
// are not reused under it (pins.go).

// Storage. Each shard keeps its entries in a ring of bytes and finds them
// through a map from the key's 64-bit hash to the ring position of its
// record. Neither holds a Go pointer, so the garbage collector never scans
// the cache: with a map of strings to slices it did, at every cycle, and a
// read-heavy load of 16 KiB values (which allocates a value per Get and
// so runs dozens of cycles a second) spent 16% of its CPU in the collector
// against 4% with the cache off (refinement 27). Records are written at the
// head of the ring and leave it from its tail, oldest first, with a second
// chance (CLOCK): a record that a get found since it was written is moved
// to the head once, its mark cleared, instead of being evicted (makeRoom),
// so the keys that are read stay and those only written once go. A write
// whose entry has the length of the key's cached one is
// written over it (storeEnd, overwrite); a record whose key was written
// with another length, or refilled, stays in the ring as garbage until the
// tail passes it. The map only ever points at records in the ring:
// eviction deletes the key's map slot if it points at the evicted record.
// Two keys with the same hash share a slot (the later fill wins); get
// compares the record's key.
//
// Record layout, little endian, at a ring offset that is a multiple of 8;
// a record never wraps past the ring's end:
//
//	0   u64  hash of the key (maphash, the cache's seed)
//	8   u32  key length k, or padMark: the rest of the ring is unused
//	12  u32  entry length n (lenMask); bit 31 (hiddenBit) set while a
//	         write of the key is between begin and storeEnd: no Get may
//	         use it; bit 30 (refBit) set by a get that found the record
//	         since it was written or last moved
//	16  k    key
//	16+k n   entry
//	         zero to 7 bytes to the next multiple of 8
//
// Fewer than entryHeader bytes before the ring's end are unused too.

const (
	// entryShards is the number of shards: a group invalidates the shards
	// of its keys, and a write blocks fills of its shard between begin and
	// end.
	entryShards = 64
	// entryHeader is the size of a record's header.
	entryHeader = 16
	// entrySlot is what a key's map slot costs (key, value and control
	// byte at the map's load), charged against the byte budget.
	entrySlot = 24
	// padMark in a record's key length marks the end of the ring's used
	// part: the next record is at the ring's start.
	padMark = ^uint32(0)
	// hiddenBit in a record's entry length hides the record from lookups:
	// a write of its key has begun and not ended.
	hiddenBit = 1 << 31
	// refBit in a record's entry length marks a record a get found since
	// it was written or last given its second chance (makeRoom).
	refBit = 1 << 30
	// lenMask takes the length out of a record's entry length field.
	lenMask = refBit - 1
)

type entryShard struct {
	mu      sync.Mutex
	slots   map[uint64]uint64 // key hash -> ring position of its record
	ring    []byte            // grown up to entryCache.maxRing
	head    uint64            // position of the next record (bytes ever written; the offset is head % len(ring))
	tail    uint64            // position of the oldest record not evicted
	gen     uint64            // bumped by every begin and end of a write to the shard
	writing int               // writes between begin and end
	hits    int64             // gets served
	misses  int64             // gets not served
	moved   int64             // records given a second chance (makeRoom)
	_       [64]byte
}

type entryCache struct {
	seed     maphash.Seed
	perShard int64 // byte budget of one shard: its ring and its map
	maxRing  int   // bytes of a shard's ring once grown
	maxSlots int   // map slots a shard may hold
	shards   [entryShards]entryShard
}

// newEntryCache returns a cache of about size bytes, or nil if size <= 0.
// A shard's ring takes two thirds of its budget and its map's slots, at
// entrySlot bytes each, the rest: an entry of a 24-byte key and a heap
// pointer is a record of about 64 bytes, so the two fill at about the same
// number of entries.
func newEntryCache(size int64) *entryCache {
	if size <= 0 {
		return nil
	}
	c := &entryCache{seed: maphash.MakeSeed(), perShard: max(size/entryShards, 1)}
	c.maxRing = int(max(c.perShard*2/3&^7, 8*entryHeader))
	c.maxSlots = max(int(c.perShard-int64(c.maxRing))/entrySlot, 8)
	for i := range c.shards {
		c.shards[i].slots = make(map[uint64]uint64)
	}
	return c
}

func (c *entryCache) shard(key []byte) (*entryShard, uint64) {
	h := maphash.Bytes(c.seed, key)
	return &c.shards[h%entryShards], h
}

// recordLen is the ring bytes of a record of key k and entry n bytes.
func recordLen(k, n int) uint64 { return uint64(entryHeader+k+n+7) &^ 7 }

// lookup returns the entry of key's record and the record, nils and false
// if there is none. The slices alias the ring: use them under s.mu.
func (s *entryShard) lookup(key []byte, h uint64) (entry, rec []byte, ok bool) {
	pos, ok := s.slots[h]
	if !ok {
		return nil, nil, false
	}
	r := s.ring[pos%uint64(len(s.ring)):]
	k, n := binary.LittleEndian.Uint32(r[8:]), binary.LittleEndian.Uint32(r[12:])
	if n&hiddenBit != 0 || string(r[entryHeader:entryHeader+k]) != string(key) {
		return nil, nil, false // being written, or another key with the same hash
	}
	n &= lenMask
	return r[entryHeader+k : entryHeader+k+n], r, true
}

// makeRoom evicts records from the tail until n more bytes fit after head
// and, if slot, the map has room for one more slot. A live record with
// refBit set gets a second chance instead of eviction: it is copied to
// the head with the bit cleared (the copy may overlap the record when the
// ring is full; copy moves memory), if it fits there with n more bytes
// after it before the ring's end, so that the record the caller then
// writes at head does not wrap either, and a ring that has not wrapped
// (one grow may still enlarge) is not made to. A move frees neither
// bytes nor a slot, but each record is moved at most once before the tail
// comes round to it again, unmarked: the loop ends.
func (s *entryShard) makeRoom(n uint64, slot bool, maxSlots int) {
	size := uint64(len(s.ring))
	for (s.head+n-s.tail > size || slot && len(s.slots) >= maxSlots) && s.tail < s.head {
		off := s.tail % size
		if size-off < entryHeader {
			s.tail += size - off
			continue
		}
		r := s.ring[off:]
		h, k := binary.LittleEndian.Uint64(r), binary.LittleEndian.Uint32(r[8:])
		if k == padMark {
			s.tail += size - off
			continue
		}
		m := binary.LittleEndian.Uint32(r[12:])
		l := recordLen(int(k), int(m&lenMask))
		if pos, ok := s.slots[h]; ok && pos == s.tail {
			if at := s.head % size; m&refBit != 0 && at+l+n <= size {
				binary.LittleEndian.PutUint32(r[12:], m&^refBit)
				copy(s.ring[at:at+l], r[:l])
				s.slots[h] = s.head
				s.head += l
				s.moved++
			} else {
				delete(s.slots, h)
			}
		}
		s.tail += l
	}
}

// grow makes the ring, smaller than maxRing, big enough for n more bytes
// after head, or maxRing. A ring grows before it first wraps (add), so
// its records' positions are their offsets and keep them in the new ring.
// Rings start small and double: a database whose reads touch few keys, or
// a test that opens thousands, does not pay for the whole budget.
func (s *entryShard) grow(n uint64, maxRing int) {
	size := max(len(s.ring), 4096)
	for uint64(size) < s.head+n && size < maxRing {
		size *= 2
	}
	ring := make([]byte, min(size, maxRing))
	copy(ring, s.ring[:s.head])
	s.ring = ring
}

// add writes a record of key and entry at the head and points key's slot
// at it.
func (s *entryShard) add(key, entry []byte, h uint64, maxRing, maxSlots int) {
	n := recordLen(len(key), len(entry))
	if s.head+n > uint64(len(s.ring)) && len(s.ring) < maxRing {
		s.grow(n, maxRing)
	}
	size := uint64(len(s.ring))
	if off := s.head % size; off+n > size { // the record would wrap: skip to the start
		s.makeRoom(size-off, false, maxSlots)
		if size-off >= entryHeader {
			binary.LittleEndian.PutUint32(s.ring[off+8:], padMark)
		}
		s.head += size - off
	}
	_, has := s.slots[h]
	s.makeRoom(n, !has, maxSlots)
	r := s.ring[s.head%size:]
	binary.LittleEndian.PutUint64(r, h)
	binary.LittleEndian.PutUint32(r[8:], uint32(len(key)))
	binary.LittleEndian.PutUint32(r[12:], uint32(len(entry)))
	copy(r[entryHeader:], key)
	copy(r[entryHeader+len(key):], entry)
	s.slots[h] = s.head
	s.head += n
}

// overwrite writes entry over the entry of key's record, and unhides it,
// if the record's entry has the same length; it reports whether it did.
// An update of a value of the same size (a heap pointer or an inline
// value) so leaves no garbage in the ring: without it every write appended
// a record, and the ring's garbage evicted the live entries of keys not
// written since (BENCHMARKS.md, "The entry cache after a reopen").
func (s *entryShard) overwrite(key, entry []byte, h uint64) bool {
	pos, ok := s.slots[h]
	if !ok {
		return false
	}
	r := s.ring[pos%uint64(len(s.ring)):]
	k, m := binary.LittleEndian.Uint32(r[8:]), binary.LittleEndian.Uint32(r[12:])
	if int(m&lenMask) != len(entry) || string(r[entryHeader:entryHeader+k]) != string(key) {
		return false
	}
	copy(r[entryHeader+k:], entry)
	binary.LittleEndian.PutUint32(r[12:], m&^hiddenBit) // unhidden; a get's mark stays
	return true
}

// bytes is what the shard holds: its ring's used part and its slots.
func (s *entryShard) bytes() int64 {
	return int64(s.head-s.tail) + int64(len(s.slots))*entrySlot
}

// get appends key's cached entry to dst and reports whether there was one.
func (c *entryCache) get(key, dst []byte) ([]byte, bool) {
	s, h := c.shard(key)
	s.mu.Lock()
	e, r, ok := s.lookup(key, h)
	if ok {
		dst = append(dst, e...)
		binary.LittleEndian.PutUint32(r[12:], binary.LittleEndian.Uint32(r[12:])|refBit)
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
	s, _ := c.shard(key)
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
	s, h := c.shard(key)
	if recordLen(len(key), len(entry)) > uint64(c.maxRing)/4 {
		return // a few huge inline values would empty the shard
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != tok.gen || s.writing != 0 {
		return
	}
	s.add(key, entry, h, c.maxRing, c.maxSlots) // a record another Get added meanwhile becomes garbage
}

// warmer fills the cache from a scan of the index (presence.go), so that
// the writes and reads that follow a reopen find the entries of the keys
// already there instead of reading Pebble: an update must look up the
// entry it replaces, and after a reopen every such lookup used to miss.
// The scan reads the index in batches, each through an iterator made
// after renew took every shard's token; a key's entry is cached only
// under its shard's token, as fill does for a Get (no write to the shard
// began since the iterator was made, so the entry is the index's), only
// if the shard has no entry for the key, and only into room the shard has
// before its ring first wraps: warming never evicts what Gets and writes
// cached, and stops once every shard is full.
type warmer struct {
	c    *entryCache
	toks [entryShards]entryToken
	full [entryShards]bool // no room left (fill stops trying)
	left int               // shards not full
}

// newWarmer returns a warmer for c, or nil if there is no cache.
func (c *entryCache) newWarmer() *warmer {
	if c == nil {
		return nil
	}
	return &warmer{c: c, left: entryShards}
}

// done reports whether every shard is full: the scan need not renew its
// iterator for warming any more.
func (w *warmer) done() bool { return w == nil || w.left == 0 }

// renew takes every shard's token, for the iterator the scan makes next.
func (w *warmer) renew() {
	for i := range w.c.shards {
		s := &w.c.shards[i]
		s.mu.Lock()
		w.toks[i] = entryToken{gen: s.gen, ok: s.writing == 0}
		s.mu.Unlock()
	}
}

// fill caches entry, the index's entry for key as read through the
// iterator made after the last renew, if its shard's token still holds,
// the key has no entry and the shard has room. It copies entry.
func (w *warmer) fill(key, entry []byte) {
	c := w.c
	n := recordLen(len(key), len(entry))
	if n > uint64(c.maxRing)/4 {
		return
	}
	s, h := c.shard(key)
	i := h % entryShards
	if w.full[i] || !w.toks[i].ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.head+n > uint64(c.maxRing) || len(s.slots) >= c.maxSlots {
		w.full[i] = true
		w.left--
		return
	}
	if s.gen != w.toks[i].gen || s.writing != 0 {
		return
	}
	if _, _, ok := s.lookup(key, h); ok {
		return
	}
	s.add(key, entry, h, c.maxRing, c.maxSlots) // no eviction: head+n fits the ring before it wraps
}

// begin is the first half of the invalidation of a written key, before the
// index holds the write: the key's entry is hidden, and fills of its shard
// stop until end.
func (c *entryCache) begin(key []byte) {
	s, h := c.shard(key)
	s.mu.Lock()
	if pos, ok := s.slots[h]; ok {
		// Hidden, not deleted, so that storeEnd can write the new entry
		// over it. (A record of another key with the same hash is hidden
		// too: it misses until it is evicted or that key is written.)
		r := s.ring[pos%uint64(len(s.ring)):]
		binary.LittleEndian.PutUint32(r[12:], binary.LittleEndian.Uint32(r[12:])|hiddenBit)
	}
	s.gen++
	s.writing++
	s.mu.Unlock()
}

// storeEnd is the second half of the invalidation of a write that the
// index now holds, with the write's entry cached as key's (write-through):
// the writer's own entry, not a read that may be stale, so no token is
// needed. An empty entry is a delete's: it records that the index holds
// no entry for key, and get then answers with an empty entry (the
// callers' "absent"). It copies entry.
func (c *entryCache) storeEnd(key, entry []byte) {
	s, h := c.shard(key)
	s.mu.Lock()
	switch {
	case recordLen(len(key), len(entry)) > uint64(c.maxRing)/4:
		delete(s.slots, h)
	case !s.overwrite(key, entry, h):
		s.add(key, entry, h, c.maxRing, c.maxSlots)
	}
	s.gen++
	s.writing--
	s.mu.Unlock()
}

// end is the second half of the invalidation of a write that did not
// reach the index (its commit failed): nothing is cached.
func (c *entryCache) end(key []byte) {
	s, _ := c.shard(key)
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
		hits, misses, bytes = hits+s.hits, misses+s.misses, bytes+s.bytes()
		s.mu.Unlock()
	}
	return hits, misses, bytes
}

// check runs fn with key's cached entry (found false if none; an empty
// one records an absent key) under the shard's lock, so that no write to
// the shard can begin meanwhile: the cross-check of tests
// (Options.crossCheckEntryCache) compares it with the index there.
func (c *entryCache) check(key []byte, fn func(cached []byte, found bool) error) error {
	s, h := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, _, ok := s.lookup(key, h)
	return fn(e, ok)
}
