package heapkv

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The index's block cache holds IndexCacheSize of table blocks while the
// memtables hold their share of it. Pebble charges every memtable's size to
// its block cache; before the cache was made larger by that share, a cache
// of IndexCacheSize held almost no blocks (issue 14: a hit rate of 1.8%).
//
// The test writes an index several times larger than the cache (inline
// values, flushed to tables), fills the mutable memtable, then reads every
// key twice in random order and checks that Pebble's cache holds at least
// 3/4 of IndexCacheSize of blocks (its shards evict on their own share, so
// it does not fill to the byte) while at least one memtable is charged.
func TestIndexCacheHoldsBlocksBesideMemTables(t *testing.T) {
	const (
		cacheSize = 2 << 20
		memSize   = 2 << 20
		valueSize = 1000
	)
	db := openTestDB(t, t.TempDir(), &Options{
		IndexCacheSize:     cacheSize,
		IndexMemTableSize:  memSize,
		InlineThreshold:    2048,
		CheckpointLogBytes: -1,
		ValueCacheSize:     -1,
		EntryCacheSize:     -1,   // every Get reads the index (writes fill the entry cache)
		NoSync:             true, // 12,000 puts; durability is not what this tests
	})
	key := func(i int) []byte { return fmt.Appendf(nil, "key-%07d", i) }
	rng := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, valueSize)
	put := func(i int) {
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		if err := db.Put(key(i), value); err != nil {
			t.Fatal(err)
		}
	}
	// About 12 MiB of index in tables: six times the cache.
	const tabled = 12 << 20 / valueSize
	for i := range tabled {
		put(i)
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	// Most of a memtable more, left unflushed.
	const unflushed = (memSize * 3 / 4) / valueSize
	for i := tabled; i < tabled+unflushed; i++ {
		put(i)
	}
	for range 2 {
		for _, i := range rng.Perm(tabled) {
			if _, err := db.Get(key(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := db.index.Metrics()
	charged := int64(m.MemTable.Size) + int64(m.MemTable.ZombieSize)
	t.Logf("block cache %d bytes in %d blocks (hits %d, misses %d); memtables charged %d bytes (%d memtables, %d zombie bytes)",
		m.BlockCache.Size, m.BlockCache.Count, m.BlockCache.Hits, m.BlockCache.Misses,
		charged, m.MemTable.Count, m.MemTable.ZombieSize)
	if charged < memSize/2 {
		t.Fatalf("memtables charge %d bytes to the cache; the test needs at least %d to mean anything", charged, memSize/2)
	}
	if want := int64(cacheSize * 3 / 4); m.BlockCache.Size < want {
		t.Fatalf("the index's block cache holds %d bytes of blocks while memtables charge %d; want at least %d (3/4 of IndexCacheSize %d)",
			m.BlockCache.Size, charged, want, cacheSize)
	}
	s, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.IndexCacheBytes != m.BlockCache.Size || s.IndexCacheHits == 0 {
		t.Fatalf("Stats: index cache %d bytes, %d hits; Pebble's metrics say %d bytes, %d hits",
			s.IndexCacheBytes, s.IndexCacheHits, m.BlockCache.Size, m.BlockCache.Hits)
	}
}
