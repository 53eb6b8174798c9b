package heapkv

import (
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
)

// The value cache keeps decoded heap values in memory
// (github.com/dgraph-io/ristretto/v2: TinyLFU admission, sampled-LFU
// eviction, cost in bytes).
//
// Identity. An entry is keyed by the first block of the value's first
// extent, which no two live values share, and carries the LSN of the write
// that stored the value, its CRC and its length. A hit counts only if all
// three match the pointer the reader holds. A heap extent is freed and
// reused, so the same first block later holds other values; but no two
// writes share both first block and LSN (a record's values occupy disjoint
// extents, LSNs are never reused while the database is open, and the cache
// starts empty at Open), so an entry of an earlier value can never be
// returned for a later one, whatever order ristretto's asynchronous Sets
// are applied in. When a commit frees extents, their entries are deleted
// so that dead values do not hold cache space (an optimisation: correctness
// rests on the identity check alone).
//
// Values handed out are copies: the cache's slices are never written after
// they are inserted, and a caller may modify what Get returns.

// cacheEntryOverhead approximates what an entry costs beyond its value:
// the cachedValue header (ristretto adds its own item overhead).
const cacheEntryOverhead = 40

type cachedValue struct {
	lsn  base.LSN
	crc  uint32
	data []byte
}

// valueCache wraps the ristretto cache with hit, miss and eviction counts.
type valueCache struct {
	c       *ristretto.Cache[uint64, cachedValue]
	maxItem int64 // values larger than this are not cached

	hits, misses, evictions atomic.Int64
	// deletes counts the Dels drop issued (tests read it).
	deletes atomic.Int64
}

// newValueCache returns a cache of size bytes. avgValue estimates the size
// of a typical cached value, to size the admission sketch.
func newValueCache(size int64, avgValue int) (*valueCache, error) {
	avgValue = max(avgValue, 512)
	vc := &valueCache{maxItem: size / 8}
	c, err := ristretto.NewCache(&ristretto.Config[uint64, cachedValue]{
		// About ten counters per value the cache can hold, as ristretto
		// recommends; a counter costs about 3 bytes, under 1.5% of size.
		NumCounters: max(10*size/int64(avgValue), 1024),
		MaxCost:     size,
		BufferItems: 64,
		KeyToHash:   blockKeyHash,
		OnEvict:     func(*ristretto.Item[cachedValue]) { vc.evictions.Add(1) },
	})
	if err != nil {
		return nil, fmt.Errorf("heapkv: value cache: %w", err)
	}
	vc.c = c
	return vc, nil
}

// blockKeyHash spreads block numbers over the hash space (the splitmix64
// finaliser, a bijection, so distinct blocks never collide) and passes the
// block itself as the conflict key, which ristretto compares on every Get.
// Ristretto's default for integer keys is the identity, under which its
// sketch rows, indexed by hash XOR seed, would all collide together for
// blocks that differ only above the sketch's mask.
func blockKeyHash(block uint64) (uint64, uint64) {
	x := block
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x, block
}

// get returns a copy of the cached value p points at, if cached.
func (vc *valueCache) get(p *pointer) ([]byte, bool) {
	v, ok := vc.c.Get(p.extents[0].Start)
	if !ok || v.lsn != p.lsn || v.crc != p.crc || uint64(len(v.data)) != p.rawLen {
		vc.misses.Add(1)
		return nil, false
	}
	vc.hits.Add(1)
	return append([]byte(nil), v.data...), true
}

// put offers a copy of value, the decoded value p points at, to the cache.
func (vc *valueCache) put(p *pointer, value []byte) {
	cost := int64(len(value)) + cacheEntryOverhead
	if cost > vc.maxItem {
		return
	}
	vc.c.Set(p.extents[0].Start, cachedValue{
		lsn:  p.lsn,
		crc:  p.crc,
		data: append([]byte(nil), value...),
	}, cost)
}

// drop deletes the entries of values starting at the given extents, which a
// commit has just freed. Safe on a nil cache.
func (vc *valueCache) drop(freed []alloc.Extent) {
	if vc == nil {
		return
	}
	for _, e := range freed {
		// Del queues a delete for ristretto's goroutine: a channel send and
		// an allocation each. Most freed values were never cached (a read
		// from the heap's map skips the cache), so look first; a value
		// whose Set is still queued is missed and stays until evicted,
		// which the identity check makes harmless.
		if _, ok := vc.c.GetTTL(e.Start); ok {
			vc.c.Del(e.Start)
			vc.deletes.Add(1)
		}
	}
}

// bytes returns the cost of the entries held, in bytes.
func (vc *valueCache) bytes() int64 { return vc.c.MaxCost() - vc.c.RemainingCost() }

func (vc *valueCache) close() {
	if vc != nil {
		vc.c.Close()
	}
}
