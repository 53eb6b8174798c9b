package heapkv_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/heapkv/heapkv"
)

// Eight goroutines incrementing one counter lose no increment and never
// conflict, beside a ninth that Puts other keys; a value that is not a
// counter is refused.
func TestIncrement(t *testing.T) {
	db := heapkv.OpenTestDB(t, t.TempDir(), &heapkv.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	var wg sync.WaitGroup
	const workers, each = 8, 500
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := db.Increment([]byte("counter"), 2); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 2000 {
			if err := db.Put(fmt.Appendf(nil, "other%d", i%10), []byte("x")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	v, err := db.Get([]byte("counter"))
	if err != nil || len(v) != 8 || int64(binary.LittleEndian.Uint64(v)) != 2*workers*each {
		t.Fatalf("counter %x (%v), want %d", v, err, 2*workers*each)
	}
	if n, err := db.Increment([]byte("counter"), -8000); err != nil || n != 0 {
		t.Fatalf("decrement to %d (%v), want 0", n, err)
	}
	if err := db.Put([]byte("text"), []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Increment([]byte("text"), 1); !errors.Is(err, heapkv.ErrNotCounter) {
		t.Fatalf("increment of a 5-byte value: %v, want ErrNotCounter", err)
	}
	if s, _ := db.Stats(); s.TxnConflicts != 0 {
		t.Errorf("%d conflicts among increments of one key", s.TxnConflicts)
	}
}

// DeleteRange deletes exactly the keys in [start, end), in several
// batches, and DropPrefix those with a prefix; their heap space is freed.
func TestDeleteRangeAndDropPrefix(t *testing.T) {
	db := heapkv.OpenTestDB(t, t.TempDir(), &heapkv.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	for _, p := range []string{"a", "b", "c"} {
		for i := range 2500 {
			if err := db.Put(fmt.Appendf(nil, "%s%05d", p, i), bytes.Repeat([]byte(p), 1000)); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := db.DeleteRange(t.Context(), []byte("a00100"), []byte("b00200"), nil)
	if err != nil || n != 2400+200 {
		t.Fatalf("delete range: %d (%v), want 2600", n, err)
	}
	n, err = db.DropPrefix(t.Context(), []byte("c"), &heapkv.DeleteRangeOptions{KeysPerSecond: 1 << 20})
	if err != nil || n != 2500 {
		t.Fatalf("drop prefix: %d (%v), want 2500", n, err)
	}
	var keys int
	var iterErr error
	for k := range db.Scan(nil, &iterErr) {
		in := (bytes.Compare(k, []byte("a00100")) >= 0 && bytes.Compare(k, []byte("b00200")) < 0) || k[0] == 'c'
		if in {
			t.Fatalf("%s survived", k)
		}
		keys++
	}
	if iterErr != nil || keys != 7500-2600-2500 {
		t.Fatalf("%d keys left (%v), want %d", keys, iterErr, 7500-2600-2500)
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if s, _ := db.Stats(); s.Keys != int64(keys) || s.HeapLiveBytes > int64(keys)*1100 {
		t.Fatalf("after deleting: %d keys, %d live heap bytes", s.Keys, s.HeapLiveBytes)
	}
}
