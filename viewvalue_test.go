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
// ViewValue none, an iterator's scan none per value, reading the values
// with Value or ViewValue (its value and extent
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
			view := testing.AllocsPerRun(20, func() {
				it, err := db.NewIter(&heapkv.IterOptions{Prefix: []byte("heap")})
				if err != nil {
					t.Fatal(err)
				}
				got := 0
				for ok := it.First(); ok; ok = it.Next() {
					if err := it.ViewValue(func([]byte) error { got++; return nil }); err != nil {
						t.Fatal(err)
					}
				}
				if err := it.Close(); err != nil || got != n {
					t.Fatalf("viewing scan: %d values, %v", got, err)
				}
			})
			// A scan allocates a constant (the iterators and their buffers),
			// not one buffer per value.
			if scan > n/4 || view > n/4 {
				t.Errorf("a scan of %d heap values allocates %.0f times, one that views them %.0f; want fewer than %d", n, scan, view, n/4)
			}
			t.Logf("scan of %d heap values: %.0f allocations; viewing them: %.0f", n, scan, view)
		})
	}
}

func ExampleIterator_ViewValue() {
	dir, _ := os.MkdirTemp("", "heapkv-example")
	defer os.RemoveAll(dir)
	db, err := heapkv.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	for i := range 3 {
		if err := db.Put(fmt.Appendf(nil, "log/%d", i), bytes.Repeat([]byte("x"), 1000*(i+1))); err != nil {
			log.Fatal(err)
		}
	}
	// Sum the values' sizes without copying them: each slice is valid
	// only inside the function, which sets rather than adds, since it may
	// run again if the disk fails under it.
	it, err := db.NewIter(&heapkv.IterOptions{Prefix: []byte("log/")})
	if err != nil {
		log.Fatal(err)
	}
	total := 0
	for ok := it.First(); ok; ok = it.Next() {
		var n int
		if err := it.ViewValue(func(v []byte) error { n = len(v); return nil }); err != nil {
			log.Fatal(err)
		}
		total += n
	}
	if err := it.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(total)
	// Output:
	// 6000
}
