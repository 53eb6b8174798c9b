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
