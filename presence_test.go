package heapkv_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

// waitKeyFilter starts the key filter's scan of the index (the first
// write would) and waits for it; it returns the lookups the filter has
// answered.
func waitKeyFilter(t *testing.T, db *heapkv.DB) int64 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ready, skipped := heapkv.KeyFilterReady(db)
		if ready {
			return skipped
		}
		if time.Now().After(deadline) {
			t.Fatal("the key filter was not ready a minute after Open")
		}
		time.Sleep(time.Millisecond)
	}
}

// The key filter (presence.go) lets writes of new keys skip the lookup of
// their old entry, and never rules out a key the index holds: with the
// cross-check on, every skipped lookup is also done and compared; Check
// (counters exact, no leaked or double-referenced block) passes after a
// load, after overwrites and deletes, and after a reopen that rebuilds the
// filter from the index, whose heap values the overwrites must free.
func TestKeyFilterSkipsNewKeysOnly(t *testing.T) {
	opts := heapkv.Options{BlockSize: 512, SegmentSize: 64 * 512, InlineThreshold: 64,
		LogSegmentSize: 64 << 10, IndexMemTableSize: 1 << 20, CheckpointLogBytes: 256 << 10}
	heapkv.SetFS(&opts, vfs.NewMem())
	heapkv.CrossCheckKeyFilter(&opts)
	rng := rand.New(rand.NewPCG(3, 4))
	value := func() []byte { // inline or heap, about half each
		v := make([]byte, rng.IntN(200))
		for i := range v {
			v[i] = byte(rng.Uint32())
		}
		return v
	}
	key := func(i int) []byte { return fmt.Appendf(nil, "key-%05d", i) }
	const n = 3000

	db := heapkv.OpenTestDB(t, "db", &opts)
	before := waitKeyFilter(t, db)
	for i := range n {
		if err := db.Put(key(i), value()); err != nil {
			t.Fatal(err)
		}
	}
	loaded := waitKeyFilter(t, db) - before
	t.Logf("load of %d new keys: %d lookups skipped", n, loaded)
	if loaded < n*99/100 {
		t.Fatalf("a load of %d new keys skipped %d lookups; want at least %d (the filter's false positives are about 0.1%% a generation)", n, loaded, n*99/100)
	}
	// Overwrites and deletes of present keys must look up (and free).
	for i := range n {
		var err error
		if i%5 == 0 {
			err = db.Delete(key(i))
		} else {
			err = db.Put(key(i), value())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := waitKeyFilter(t, db) - before - loaded; got != 0 {
		t.Fatalf("%d writes of keys the index held skipped their lookup", got)
	}
	if _, err := db.Check(context.Background()); err != nil {
		t.Fatalf("Check after the load and overwrites: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen: the filter is rebuilt from the index. Keys deleted before
	// are absent now and may be skipped; every other key must be looked up.
	db = heapkv.OpenTestDB(t, "db", &opts)
	before = waitKeyFilter(t, db)
	for i := range n {
		if i%5 == 0 {
			continue
		}
		if err := db.Put(key(i), value()); err != nil {
			t.Fatal(err)
		}
	}
	if got := waitKeyFilter(t, db) - before; got != 0 {
		t.Fatalf("after reopening, %d overwrites of keys the index held skipped their lookup", got)
	}
	if _, err := db.Check(context.Background()); err != nil {
		t.Fatalf("Check after reopening and overwriting: %v", err)
	}
	s, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(n - n/5); s.Keys != want {
		t.Fatalf("Stats.Keys = %d, want %d", s.Keys, want)
	}
}
