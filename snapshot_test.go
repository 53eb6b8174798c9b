package heapkv_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

// Snapshot isolation of heap values (DESIGN invariant 5): a snapshot, an
// iterator and a read-only transaction opened before overwrites and
// deletes keep returning the old values bit for bit while writers churn,
// because the blocks those values occupy are not reused while they are
// open; once they close, the allocator reuses the space and the heap stops
// growing.

func snapshotTestDB(t *testing.T) *heapkv.DB {
	t.Helper()
	opts := &heapkv.Options{
		BlockSize:          512,
		SegmentSize:        64 * 512,
		InlineThreshold:    64,
		CheckpointLogBytes: -1,
		Logger:             txnLogger,
	}
	heapkv.SetFS(opts, vfs.NewMem()) // durable writes, cheap fsyncs
	db := openTestDB(t, "db", opts)
	return db
}

func randHeapValue(rng *rand.Rand) []byte {
	b := make([]byte, 100+rng.IntN(2500))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// churn overwrites (and now and then deletes) every key rounds times from
// two goroutines.
func churn(t *testing.T, db *heapkv.DB, keys []string, rounds int, seed uint64) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for range rounds {
				for i := w; i < len(keys); i += 2 {
					var err error
					if rng.IntN(8) == 0 {
						err = db.Delete([]byte(keys[i]))
					} else {
						err = db.Put([]byte(keys[i]), randHeapValue(rng))
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestSnapshotHeapIsolation(t *testing.T) {
	db := snapshotTestDB(t)
	rng := rand.New(rand.NewPCG(7, 7))
	const nkeys = 60
	keys := make([]string, nkeys)
	old := map[string][]byte{}
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%03d", i)
		old[keys[i]] = randHeapValue(rng)
		if err := db.Put([]byte(keys[i]), old[keys[i]]); err != nil {
			t.Fatal(err)
		}
	}
	churn(t, db, keys[:10], 3, 1) // some reuse before the snapshot
	for _, k := range keys[:10] {
		v, err := db.Get([]byte(k))
		if err != nil {
			delete(old, k)
		} else {
			old[k] = v
		}
	}

	snap, err := db.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	view, err := db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	before, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if before.OpenSnapshots != 1 {
		t.Fatalf("before.OpenSnapshots = %v, want %v", before.OpenSnapshots, 1)
	}
	if before.OpenIterators != 1 {
		t.Fatalf("before.OpenIterators = %v, want %v", before.OpenIterators, 1)
	}
	if before.OpenTxns != 1 {
		t.Fatalf("before.OpenTxns = %v, want %v", before.OpenTxns, 1)
	}

	verify := func(get func([]byte) ([]byte, error), what string) {
		for _, k := range keys {
			v, err := get([]byte(k))
			want, ok := old[k]
			if !ok {
				if err == nil {
					t.Errorf("%s: %s present, want absent", what, k)
				}
				continue
			}
			if err != nil || !bytes.Equal(v, want) {
				t.Errorf("%s: %s: %d bytes, %v; want the old %d bytes bit for bit", what, k, len(v), err, len(want))
			}
		}
	}
	// Readers run while the writers churn.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for !stop.Load() && !t.Failed() {
			verify(snap.Get, "snapshot")
			verify(view.Get, "read-only txn")
		}
	}()
	go func() {
		defer wg.Done()
		// The iterator walks slowly, back and forth, during the churn.
		for !stop.Load() && !t.Failed() {
			n := 0
			for ok := it.First(); ok; ok = it.Next() {
				k, v, err := it.KeyValue()
				if err != nil || !bytes.Equal(v, old[string(k)]) {
					t.Errorf("iterator: %s: %d bytes, %v; want the old %d bytes", k, len(v), err, len(old[string(k)]))
				}
				n++
			}
			if n != len(old) {
				t.Errorf("iterator saw %d keys, want %d", n, len(old))
			}
		}
	}()
	const rounds = 8
	churn(t, db, keys, rounds, 2)
	stop.Store(true)
	wg.Wait()
	verify(snap.Get, "snapshot after churn")

	during, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// Every value overwritten since the snapshot is held back: at least one
	// round of overwrites (about 1.3 KiB each, in 512-byte blocks).
	if during.HeapPendingFree <= int64(nkeys*512) {
		t.Fatalf("during.HeapPendingFree = %v, want > int64(nkeys*512) = %v", during.HeapPendingFree, int64(nkeys*512))
	}
	if during.HeapFileBytes <= before.HeapFileBytes {
		t.Fatalf("during.HeapFileBytes = %v, want > before.HeapFileBytes = %v", during.HeapFileBytes, before.HeapFileBytes)
	}
	if during.OldestReaderLSN != before.OldestReaderLSN {
		t.Fatalf("during.OldestReaderLSN = %v, want %v", during.OldestReaderLSN, before.OldestReaderLSN)
	}
	if during.LSN <= during.OldestReaderLSN {
		t.Fatalf("during.LSN = %v, want > during.OldestReaderLSN = %v", during.LSN, during.OldestReaderLSN)
	}
	t.Logf("with readers open: pending free %d bytes, heap file %d -> %d bytes",
		during.HeapPendingFree, before.HeapFileBytes, during.HeapFileBytes)

	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := view.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("release"), nil); err != nil {
		t.Fatal(err)
	} // a commit releases deferred frees
	after, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if n := after.OpenSnapshots + after.OpenIterators + after.OpenTxns; n != 0 {
		t.Fatalf("%d readers still open, want 0", n)
	}
	if after.HeapPendingFree >= int64(nkeys*3000/8) {
		t.Fatalf("after.HeapPendingFree = %v, want < int64(nkeys*3000/8) = %v", after.HeapPendingFree, int64(nkeys*3000/8))
	} // only the last group's frees
	// The same churn again now reuses the freed space: the heap barely grows.
	churn(t, db, keys, rounds, 3)
	final, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after close: pending free %d bytes; the same churn again: heap file %d -> %d bytes",
		after.HeapPendingFree, after.HeapFileBytes, final.HeapFileBytes)
	if final.HeapFileBytes-after.HeapFileBytes > (during.HeapFileBytes-before.HeapFileBytes)/4 {
		t.Fatalf("final.HeapFileBytes-after.HeapFileBytes = %v, want <= (during.HeapFileBytes-before.HeapFileBytes)/4 = %v", final.HeapFileBytes-after.HeapFileBytes, (during.HeapFileBytes-before.HeapFileBytes)/4)
	}
	checkTxnDB(t, db)
}
