package heapkv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIteratorWalksAhead: a forward scan that reads values lying apart in
// the heap walks its Pebble iterator ahead (iterator_ahead.go), and every
// move from there, a change of direction included, lands where a scan
// that does not walk ahead lands, with the same keys and values. A
// keys-only scan does not walk ahead, nor does a scan of values that lie
// one after another. The random model test (TestIteratorModel) drives the same
// paths in random order; this test makes sure they are reached.
func TestIteratorWalksAhead(t *testing.T) {
	db := openTestDB(t, t.TempDir(), &Options{NoSync: true})
	if !db.heap.Mapped() {
		t.Skip("the heap is not mapped on this platform: nothing walks ahead")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	vals := map[string][]byte{}
	var keys, inOrder []string
	put := func(k string, n int) {
		v := make([]byte, n)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		if err := db.Put([]byte(k), v); err != nil {
			t.Fatal(err)
		}
		vals[k] = v
	}
	// Keys written in a random order: their values lie apart.
	for _, i := range rng.Perm(300) {
		n := 300 + rng.IntN(3000) // heap values, one or more extents
		if i%7 == 0 {
			n = 1 + rng.IntN(DefaultInlineThreshold) // inline ones between them
		}
		put(fmt.Sprintf("k%04d", i*2), n)
	}
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("k%04d", i*2))
	}
	// Keys written in order: their values lie one after another.
	for i := range 50 {
		k := fmt.Sprintf("s%04d", i)
		put(k, 1000)
		inOrder = append(inOrder, k)
	}
	it, err := db.NewIter(&IterOptions{UpperBound: []byte("s")})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	at := func(i int, how string) {
		t.Helper()
		if !it.Valid() || string(it.Key()) != keys[i] {
			t.Fatalf("%s: at %q, want %q", how, it.Key(), keys[i])
		}
		viewed := false
		if err := it.ViewValue(func(v []byte) error {
			viewed = true
			if !bytes.Equal(v, vals[keys[i]]) {
				return fmt.Errorf("viewed value of %q differs", keys[i])
			}
			return nil
		}); err != nil || !viewed {
			t.Fatalf("%s: ViewValue: %v (viewed %v)", how, err, viewed)
		}
		v, err := it.Value()
		if err != nil || !bytes.Equal(v, vals[keys[i]]) {
			t.Fatalf("%s: Value of %q: %v", how, keys[i], err)
		}
	}

	// A scan that reads values walks ahead after aheadStreak steps.
	it.First()
	at(0, "First")
	for i := 1; i < 100; i++ {
		if !it.Next() {
			t.Fatalf("Next ended at %d", i)
		}
		at(i, "Next")
	}
	if !it.ah.on {
		t.Fatal("a scan that read 100 values in a row does not walk ahead")
	}
	// A change of direction from the walk: Prev lands on the key before.
	if !it.Prev() {
		t.Fatal("Prev from the walk ahead ended")
	}
	at(98, "Prev after the walk")
	if it.ah.on {
		t.Fatal("still walking ahead backwards")
	}
	for i := 99; i < 200; i++ {
		it.Next()
		at(i, "Next after Prev")
	}
	// A seek from the walk, to a key between two keys.
	if !it.ah.on {
		t.Fatal("the second forward scan does not walk ahead")
	}
	it.SeekGE([]byte("k0101")) // between k0100 (50) and k0102 (51)
	at(51, "SeekGE from the walk")
	for i := 52; i < len(keys); i++ {
		it.Next()
		at(i, "Next to the end")
	}
	if it.Next() || it.Valid() || it.Key() != nil {
		t.Fatal("Next past the last key")
	}
	if !it.Prev() {
		t.Fatal("Prev after running off the end")
	}
	at(len(keys)-1, "Prev after the end")
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}

	// Keys only: no values read, no walk ahead, every key seen.
	var seen []string
	for ok := it.First(); ok; ok = it.Next() {
		if it.ah.on {
			t.Fatalf("a keys-only scan walks ahead at %q", it.Key())
		}
		seen = append(seen, string(it.Key()))
	}
	if !slices.Equal(seen, keys) {
		t.Fatalf("keys-only scan saw %d keys, want %d", len(seen), len(keys))
	}

	// Values in key order: read, but no walk ahead.
	seq, err := db.NewIter(&IterOptions{Prefix: []byte("s")})
	if err != nil {
		t.Fatal(err)
	}
	defer seq.Close()
	seen = seen[:0]
	for ok := seq.First(); ok; ok = seq.Next() {
		if seq.ah.on {
			t.Fatalf("a scan of values in key order walks ahead at %q", seq.Key())
		}
		if v, err := seq.Value(); err != nil || !bytes.Equal(v, vals[string(seq.Key())]) {
			t.Fatalf("value of %q: %v", seq.Key(), err)
		}
		seen = append(seen, string(seq.Key()))
	}
	if !slices.Equal(seen, inOrder) {
		t.Fatalf("the scan in key order saw %d keys, want %d", len(seen), len(inOrder))
	}
}
