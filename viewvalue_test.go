package heapkv_test

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"os"
	"testing"

	"github.com/heapkv/heapkv"
)

func ExampleDB_ViewValue() {
	dir, _ := os.MkdirTemp("", "heapkv-example")
	defer os.RemoveAll(dir)
	db, err := heapkv.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	if err := db.Put([]byte("doc"), bytes.Repeat([]byte("ab"), 2000)); err != nil {
		log.Fatal(err)
	}
	// Count the a's without copying the value into memory of our own: the
	// slice is valid only inside the function.
	var n int
	err = db.ViewValue([]byte("doc"), func(v []byte) error {
		n = bytes.Count(v, []byte("a"))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)

	err = db.ViewValue([]byte("missing"), func([]byte) error { return nil })
	fmt.Println(errors.Is(err, heapkv.ErrNotFound))
	// Output:
	// 2000
	// true
}

// A read allocates at most the value it returns: Get one allocation,
// ViewValue none, an iterator's scan none per value (its value and extent
// buffers are reused), for values in the heap and in the index, with the
// index-entry cache hit and missed. The race detector's sync.Pool drops
// buffers on purpose, so counts mean something only without it: the README's
// test command runs this test a second time without -race.
func TestReadAllocations(t *testing.T) {
	if heapkv.RaceEnabled {
		t.Skip("allocation counts under the race detector include sync.Pool's deliberate drops; run without -race")
	}
	for _, ecache := range []int64{0, -1} {
		t.Run(fmt.Sprintf("entrycache=%v", ecache == 0), func(t *testing.T) {
			db := heapkv.OpenTestDB(t, t.TempDir(), &heapkv.Options{NoSync: true, EntryCacheSize: ecache})
			const n = 100
			for i := range n {
				if err := db.Put(fmt.Appendf(nil, "heap%03d", i), bytes.Repeat([]byte{byte(i)}, 3000+i)); err != nil {
					t.Fatal(err)
				}
				if err := db.Put(fmt.Appendf(nil, "inline%03d", i), bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Sync(); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"heap042", "inline042"} {
				key := []byte(k)
				get := testing.AllocsPerRun(100, func() {
					if _, err := db.Get(key); err != nil {
						t.Fatal(err)
					}
				})
				view := testing.AllocsPerRun(100, func() {
					if err := db.ViewValue(key, func([]byte) error { return nil }); err != nil {
						t.Fatal(err)
					}
				})
				if get > 1 || view > 0 {
					t.Errorf("%s: Get allocates %.1f times, ViewValue %.1f; want at most 1 and 0", k, get, view)
				}
			}
			scan := testing.AllocsPerRun(20, func() {
				it, err := db.NewIter(&heapkv.IterOptions{Prefix: []byte("heap")})
				if err != nil {
					t.Fatal(err)
				}
				got := 0
				for ok := it.First(); ok; ok = it.Next() {
					if _, err := it.Value(); err != nil {
						t.Fatal(err)
					}
					got++
				}
				if err := it.Close(); err != nil || got != n {
					t.Fatalf("scan: %d values, %v", got, err)
				}
			})
			// A scan allocates a constant (the iterators and their buffers),
			// not one buffer per value.
			if scan > n/4 {
				t.Errorf("a scan of %d heap values allocates %.0f times; want fewer than %d", n, scan, n/4)
			}
			t.Logf("scan of %d heap values: %.0f allocations", n, scan)
		})
	}
}
