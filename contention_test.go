package heapkv_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/heapkv/heapkv"
)

// TestHotKeyContention has many writers overwrite and delete the same few
// keys at once. Each write's record names the extents it frees, taken from
// a value the writer looked up before it queued; if the leader trusted a
// lookup that a concurrent commit had made stale, an extent would be freed
// twice or never, and Check would find double references or leaks.
func TestHotKeyContention(t *testing.T) {
	opts := &heapkv.Options{NoSync: true, InlineThreshold: 100, SegmentSize: 64 * 4096}
	db := openTestDB(t, t.TempDir(), opts)
	const writers, keys, rounds = 8, 6, 400
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < rounds; i++ {
				k := []byte(fmt.Sprintf("hot-%d", rng.IntN(keys)))
				var err error
				switch r := rng.IntN(10); {
				case r == 0:
					err = db.Delete(k)
				case r < 3:
					b := db.NewBatch()
					b.Put(k, bytes.Repeat([]byte{byte(i)}, 50))
					b.Put([]byte(fmt.Sprintf("hot-%d", rng.IntN(keys))), bytes.Repeat([]byte{byte(w)}, 5000))
					err = db.Apply(b, nil)
				default:
					err = db.Put(k, bytes.Repeat([]byte{byte(w)}, 200+rng.IntN(9000)))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	rep, err := db.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.LeakedBlocks != 0 {
		t.Fatalf("rep.LeakedBlocks = %v, want 0", rep.LeakedBlocks)
	}
	if rep.DoubleRefBlocks != 0 {
		t.Fatalf("rep.DoubleRefBlocks = %v, want 0", rep.DoubleRefBlocks)
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Keys != rep.Keys {
		t.Fatalf("st.Keys = %v, want %v", st.Keys, rep.Keys)
	}
}
