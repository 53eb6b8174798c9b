package engine

import (
	"errors"
	"io"
	"log/slog"

	"github.com/heapkv/heapkv"
)

func init() {
	register(Config{"heapkv", "heapkv with its default options (NoSync when -sync=false)", openHeapKV})
	register(Config{"heapkv-pread", "heapkv reading heap values with pread instead of its memory map (NoHeapMap)", openHeapKVPread})
	register(Config{"heapkv-4k", "heapkv with the heap geometry of databases made before 128-byte blocks: 4 KiB blocks, values up to 2 KiB inline", openHeapKV4K})
}

type heapDB struct{ db *heapkv.DB }

func openHeapKV(dir string, sync bool) (DB, error) {
	return openHeap(dir, &heapkv.Options{NoSync: !sync})
}

func openHeapKVPread(dir string, sync bool) (DB, error) {
	return openHeap(dir, &heapkv.Options{NoSync: !sync, NoHeapMap: true})
}

func openHeapKV4K(dir string, sync bool) (DB, error) {
	return openHeap(dir, &heapkv.Options{NoSync: !sync, BlockSize: 4096, InlineThreshold: 2048})
}

func openHeap(dir string, o *heapkv.Options) (DB, error) {
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := heapkv.Open(dir, o)
	if err != nil {
		return nil, err
	}
	return &heapDB{db}, nil
}

func (h *heapDB) Insert(k, v []byte) error { return h.db.Put(k, v) }
func (h *heapDB) Update(k, v []byte) error { return h.db.Put(k, v) }
func (h *heapDB) Read(k []byte) ([]byte, error) {
	v, err := h.db.Get(k)
	if errors.Is(err, heapkv.ErrNotFound) {
		return nil, ErrNotFound
	}
	return v, err
}

func (h *heapDB) Scan(start []byte, n int) (int, error) {
	it, err := h.db.NewIter(&heapkv.IterOptions{LowerBound: start})
	if err != nil {
		return 0, err
	}
	got, sum := 0, uint64(0)
	defer func() { touchSink.Add(sum) }()
	view := func(v []byte) error { sum += touch(v); return nil }
	for ok := it.SeekGE(start); ok && got < n; ok = it.Next() {
		if err := it.ViewValue(view); err != nil {
			it.Close()
			return got, err
		}
		got++
	}
	if err := it.Error(); err != nil {
		it.Close()
		return got, err
	}
	return got, it.Close()
}

func (h *heapDB) Close() error { return h.db.Close() }

// Counters reports the commit path's work (writes, the groups they were
// committed in, device flushes, checkpoints, the flushes that made writes
// durable: count and total seconds) and how the read path's caches did:
// the index-entry cache, the index's block cache, and the key filter's
// lookups saved.
func (h *heapDB) Counters() (map[string]float64, error) {
	s, err := h.db.Stats()
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		"commits":       float64(s.Commits),
		"commit_groups": float64(s.CommitGroups),
		"fsyncs":        float64(s.Fsyncs),
		"checkpoints":   float64(s.Checkpoints),
		"syncs":         float64(s.SyncLatency.Count),
		"sync_seconds":  s.SyncLatency.Sum.Seconds(),

		"entry_cache_hits":   float64(s.EntryCacheHits),
		"entry_cache_misses": float64(s.EntryCacheMisses),
		"index_cache_hits":   float64(s.IndexCacheHits),
		"index_cache_misses": float64(s.IndexCacheMisses),
		"key_filter_skips":   float64(s.KeyFilterSkips),
	}, nil
}
