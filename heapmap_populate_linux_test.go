package heapkv_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// waitPopulated waits until Stats reports at least n bytes of the heap's
// map populated ahead of reads.
func waitPopulated(t *testing.T, db *heapkv.DB, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := db.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if s.HeapMapPopulated >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HeapMapPopulated %d after 20 s, want at least %d", s.HeapMapPopulated, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// The heap's map is populated ahead of reads once reads come (refinements
// 44 and 57): as writes add to the heap while values are read, and at the
// first read after a reopen for the heap the page cache holds. Stats
// reports it; values read back right either way; NoHeapMap populates
// nothing.
func TestHeapMapPopulated(t *testing.T) {
	dir := t.TempDir()
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 100<<10) }
	db := heapkv.OpenTestDB(t, dir, &heapkv.Options{NoSync: true})
	for i := range 400 { // 40 MiB of heap
		if err := db.Put(fmt.Appendf(nil, "k%03d", i), value(i)); err != nil {
			t.Fatal(err)
		}
		if v, err := db.Get([]byte("k000")); err != nil || !bytes.Equal(v, value(0)) {
			t.Fatalf("Get k000 after %d Puts: %d bytes, %v", i+1, len(v), err)
		}
	}
	waitPopulated(t, db, 16<<20)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = heapkv.OpenTestDB(t, dir, nil)
	if s, err := db.Stats(); err != nil || s.HeapMapPopulated != 0 {
		t.Fatalf("HeapMapPopulated %d before any read (%v), want 0", s.HeapMapPopulated, err)
	}
	if _, err := db.Get([]byte("k399")); err != nil {
		t.Fatal(err)
	}
	waitPopulated(t, db, 32<<20) // the heap's cached pages, mapped at the first read
	for i := range 400 {
		v, err := db.Get(fmt.Appendf(nil, "k%03d", i))
		if err != nil || !bytes.Equal(v, value(i)) {
			t.Fatalf("Get k%03d after the reopen: %d bytes, %v", i, len(v), err)
		}
	}
	if s, err := db.Stats(); err != nil || s.HeapMapFaults != 0 {
		t.Fatalf("%d reads faulted on the map (%v)", s.HeapMapFaults, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = heapkv.OpenTestDB(t, dir, &heapkv.Options{NoHeapMap: true})
	if _, err := db.Get([]byte("k000")); err != nil {
		t.Fatal(err)
	}
	if s, err := db.Stats(); err != nil || s.HeapMapPopulated != 0 {
		t.Fatalf("NoHeapMap: HeapMapPopulated %d (%v)", s.HeapMapPopulated, err)
	}
}
