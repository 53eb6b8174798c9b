package heapkv_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// The index-entry cache under concurrent writes: each key has one writer,
// which writes versions 1, 2, 3, ... of it, inline and heap values in
// turn; readers Get keys at random. The cross-check compares every hit with
// the index, and no reader may see a key's version go backwards, nor a
// version older than one its writer had acknowledged before the Get began
// (reads stay linearizable with the cache). The cache is small, so entries
// are evicted all the time.
func TestEntryCacheConcurrent(t *testing.T) {
	opts := &heapkv.Options{EntryCacheSize: 64 << 10, InlineThreshold: 256}
	heapkv.CrossCheckEntryCache(opts)
	db := heapkv.OpenTestDB(t, t.TempDir(), opts)
	const (
		writers = 4
		perW    = 8 // keys per writer
		keys    = writers * perW
	)
	key := func(i int) []byte { return fmt.Appendf(nil, "key-%02d", i) }
	value := func(ver uint64) []byte {
		n := 16
		if ver%2 == 0 {
			n = 1000 // heap
		}
		v := make([]byte, n)
		binary.LittleEndian.PutUint64(v, ver)
		return v
	}
	var acked [keys]atomic.Uint64 // the last version acknowledged per key
	deadline := time.Now().Add(2 * time.Second)
	if testing.Short() {
		deadline = time.Now().Add(300 * time.Millisecond)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2*writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ver := uint64(1); time.Now().Before(deadline); ver++ {
				for k := w * perW; k < (w+1)*perW; k++ {
					if err := db.Put(key(k), value(ver)); err != nil {
						errc <- err
						return
					}
					acked[k].Store(ver)
				}
			}
		}()
	}
	var hits atomic.Int64
	for r := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := make([]uint64, keys)
			for i := r; time.Now().Before(deadline); i += 7 {
				k := i % keys
				floor := acked[k].Load()
				v, err := db.Get(key(k))
				if errors.Is(err, heapkv.ErrNotFound) && floor == 0 {
					continue
				}
				if err != nil {
					errc <- fmt.Errorf("get %s: %w", key(k), err)
					return
				}
				ver := binary.LittleEndian.Uint64(v)
				if ver < floor || ver < seen[k] {
					errc <- fmt.Errorf("get %s: version %d, after version %d was acknowledged and %d read", key(k), ver, floor, seen[k])
					return
				}
				seen[k] = ver
				hits.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	s, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.EntryCacheHits == 0 || s.EntryCacheMisses == 0 {
		t.Fatalf("entry cache: %d hits, %d misses: the test did not exercise it", s.EntryCacheHits, s.EntryCacheMisses)
	}
	t.Logf("%d gets; entry cache %d hits, %d misses, %d bytes", hits.Load(), s.EntryCacheHits, s.EntryCacheMisses, s.EntryCacheBytes)
}

// An overwrite looks up the entry it replaces in the entry cache when a
// Get left it there, and frees the old value's blocks just as with the
// index's entry: Check finds no block leaked or referenced twice. Each
// round reopens the database, so that the leader has no record of the
// key's last write and uses the writer's lookup.
func TestOverwriteLookupFromEntryCache(t *testing.T) {
	opts := &heapkv.Options{NoSync: true}
	heapkv.CrossCheckEntryCache(opts)
	dir := t.TempDir()
	k := []byte("k")
	for i, size := range []int{1000, 3000, 300, 9000} {
		db := heapkv.OpenTestDB(t, dir, opts)
		stats := func() heapkv.Stats {
			t.Helper()
			st, err := db.Stats()
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		if _, err := db.Get(k); err != nil && !errors.Is(err, heapkv.ErrNotFound) {
			t.Fatal(err)
		}
		before := stats().EntryCacheHits
		v := make([]byte, size)
		v[0] = byte(i)
		if err := db.Put(k, v); err != nil {
			t.Fatal(err)
		}
		if hits := stats().EntryCacheHits - before; i > 0 && hits != 1 {
			t.Fatalf("put %d: %d entry cache hits, want the lookup's 1", i, hits)
		}
		got, err := db.Get(k)
		if err != nil || len(got) != size || got[0] != byte(i) {
			t.Fatalf("put %d: Get = %d bytes, %v", i, len(got), err)
		}
		if err := db.Sync(); err != nil {
			t.Fatal(err)
		}
		rep, err := db.Check(t.Context())
		if err != nil || !rep.OK() {
			t.Fatalf("put %d: Check: %v\n%v", i, err, rep)
		}
		// One value's blocks are allocated: size rounded up to 128 bytes.
		if st := stats(); st.HeapAllocBytes-st.HeapPendingFree != int64((size+127)/128*128) {
			t.Fatalf("put %d: %d heap bytes live, want %d", i, st.HeapAllocBytes-st.HeapPendingFree, (size+127)/128*128)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Writes store their own entries in the cache (write-through): an
// overwrite of a key just written, and a Get of it, hit the cache without
// a Get having filled it; a delete stores "absent".
func TestEntryCacheWriteThrough(t *testing.T) {
	opts := &heapkv.Options{InlineThreshold: 256}
	heapkv.CrossCheckEntryCache(opts)
	db := heapkv.OpenTestDB(t, t.TempDir(), opts)
	hits := func() int64 {
		t.Helper()
		st, err := db.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.EntryCacheHits
	}
	k := []byte("k")
	for i, v := range [][]byte{make([]byte, 1000), []byte("inline"), make([]byte, 3000)} {
		before := hits()
		if err := db.Put(k, v); err != nil {
			t.Fatal(err)
		}
		if want := int64(min(i, 1)); hits()-before != want {
			t.Fatalf("write %d: %d cache hits, want %d (the first write of a new key looks nothing up)", i, hits()-before, want)
		}
	}
	before := hits()
	got, err := db.Get(k)
	if err != nil || len(got) != 3000 || hits()-before != 1 {
		t.Fatalf("Get after the writes: %d bytes, %v, %d hits", len(got), err, hits()-before)
	}
	if err := db.Delete(k); err != nil {
		t.Fatal(err)
	}
	// The delete leaves an "absent" entry: the Get and the next write of
	// the key hit it.
	before = hits()
	if _, err := db.Get(k); !errors.Is(err, heapkv.ErrNotFound) || hits()-before != 1 {
		t.Fatalf("Get after the delete: %v, %d hits", err, hits()-before)
	}
	if err := db.Put(k, []byte("again")); err != nil || hits()-before != 2 {
		t.Fatalf("Put after the delete: %v, %d hits", err, hits()-before-1)
	}
	if got, err := db.Get(k); err != nil || string(got) != "again" {
		t.Fatalf("Get after the Put: %q, %v", got, err)
	}
}
