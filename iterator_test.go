package heapkv_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/heapkv/heapkv"
)

// Iterators checked against a model: random keys over a small alphabet
// (so prefixes and bounds collide, 0xff included), inline and heap values,
// random sequences of every positioning call, for iterators over the DB,
// over a snapshot taken before more writes, and over transactions whose
// buffered writes and deletes must be merged in.

// modelIter is the reference: sorted keys of the visible state in bounds.
type modelIter struct {
	keys  []string
	vals  map[string][]byte
	pos   int
	valid bool
	dir   int
}

func newModelIter(state map[string][]byte, lo, hi []byte, prefix string) *modelIter {
	m := &modelIter{vals: state}
	for k := range state {
		if lo != nil && k < string(lo) || hi != nil && k >= string(hi) || !strings.HasPrefix(k, prefix) {
			continue
		}
		m.keys = append(m.keys, k)
	}
	slices.Sort(m.keys)
	return m
}

func (m *modelIter) set(pos, dir int) bool {
	m.pos, m.dir = pos, dir
	m.valid = pos >= 0 && pos < len(m.keys)
	return m.valid
}

func (m *modelIter) first() bool { return m.set(0, 1) }
func (m *modelIter) last() bool  { return m.set(len(m.keys)-1, -1) }
func (m *modelIter) seekGE(k string) bool {
	i, _ := slices.BinarySearch(m.keys, k)
	return m.set(i, 1)
}
func (m *modelIter) seekLT(k string) bool {
	i, _ := slices.BinarySearch(m.keys, k)
	return m.set(i-1, -1)
}
func (m *modelIter) next() bool {
	switch {
	case m.valid:
		return m.set(m.pos+1, 1)
	case m.dir == -1:
		return m.first()
	}
	return false
}
func (m *modelIter) prev() bool {
	switch {
	case m.valid:
		return m.set(m.pos-1, -1)
	case m.dir == 1:
		return m.last()
	}
	return false
}

var iterAlphabet = []byte{'a', 'b', 'c', 0xff}

func randIterKey(rng *rand.Rand) string {
	n := 1 + rng.IntN(3)
	b := make([]byte, n)
	for i := range b {
		b[i] = iterAlphabet[rng.IntN(len(iterAlphabet))]
	}
	return string(b)
}

func randIterValue(rng *rand.Rand) []byte {
	n := rng.IntN(40)
	if rng.IntN(3) == 0 {
		n = 65 + rng.IntN(3000) // heap
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// checkIter drives it and m through the same random calls.
func checkIter(t *testing.T, rng *rand.Rand, it *heapkv.Iterator, m *modelIter, label string) {
	t.Helper()
	var trace []string
	for range 60 {
		var got, want bool
		switch op := rng.IntN(10); {
		case op == 0:
			got, want = it.First(), m.first()
			trace = append(trace, "First")
		case op == 1:
			got, want = it.Last(), m.last()
			trace = append(trace, "Last")
		case op == 2:
			k := randIterKey(rng)
			got, want = it.SeekGE([]byte(k)), m.seekGE(k)
			trace = append(trace, fmt.Sprintf("SeekGE(%q)", k))
		case op == 3:
			k := randIterKey(rng)
			got, want = it.SeekLT([]byte(k)), m.seekLT(k)
			trace = append(trace, fmt.Sprintf("SeekLT(%q)", k))
		case op < 7:
			got, want = it.Next(), m.next()
			trace = append(trace, "Next")
		default:
			got, want = it.Prev(), m.prev()
			trace = append(trace, "Prev")
		}
		if got != want {
			t.Fatalf("%s: after %v: valid %v, want %v (model at %d of %q)", label, trace, got, want, m.pos, m.keys)
		}
		if it.Valid() != got {
			t.Fatalf("it.Valid() = %v, want %v", it.Valid(), got)
		}
		if !got {
			if it.Key() != nil {
				t.Fatalf("it.Key() = %v, want nil", it.Key())
			}
			if err := it.ViewValue(func([]byte) error { return errors.New("called") }); err != nil {
				t.Fatalf("%s: after %v: ViewValue off a key: %v", label, trace, err)
			}
			continue
		}
		k := m.keys[m.pos]
		if string(it.Key()) != k {
			t.Fatalf("%s: after %v: key %q, want %q", label, trace, it.Key(), k)
		}
		// Value, ViewValue, or both in either order: each must see the
		// model's value.
		switch rng.IntN(4) {
		case 0:
		case 1:
			checkIterValue(t, it, m.vals[k], label, trace)
		case 2:
			checkIterView(t, it, m.vals[k], label, trace)
		default:
			checkIterView(t, it, m.vals[k], label, trace)
			checkIterValue(t, it, m.vals[k], label, trace)
			checkIterView(t, it, m.vals[k], label, trace)
		}
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
}

func checkIterValue(t *testing.T, it *heapkv.Iterator, want []byte, label string, trace []string) {
	t.Helper()
	v, err := it.Value()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v, want) {
		t.Fatalf("%s: after %v: Value of %q differs (%d bytes, want %d)", label, trace, it.Key(), len(v), len(want))
	}
}

func checkIterView(t *testing.T, it *heapkv.Iterator, want []byte, label string, trace []string) {
	t.Helper()
	calls := 0
	errSeen := errors.New("seen")
	err := it.ViewValue(func(v []byte) error {
		calls++
		if !bytes.Equal(v, want) {
			return fmt.Errorf("%d bytes, want %d", len(v), len(want))
		}
		return errSeen
	})
	if err != errSeen || calls != 1 {
		t.Fatalf("%s: after %v: ViewValue of %q called its function %d times and returned %v; want once, returning its error", label, trace, it.Key(), calls, err)
	}
}

func randIterOptions(rng *rand.Rand) (*heapkv.IterOptions, []byte, []byte, string) {
	var o heapkv.IterOptions
	if rng.IntN(3) == 0 {
		o.LowerBound = []byte(randIterKey(rng))
	}
	if rng.IntN(3) == 0 {
		o.UpperBound = []byte(randIterKey(rng))
	}
	if rng.IntN(3) == 0 {
		o.Prefix = []byte(randIterKey(rng))[:1]
	}
	lo, hi := o.LowerBound, o.UpperBound
	return &o, lo, hi, string(o.Prefix)
}

func TestIteratorModel(t *testing.T) {
	db := openTxnDB(t)
	rng := rand.New(rand.NewPCG(1, 2))
	state := map[string][]byte{}
	mutate := func(n int) {
		for range n {
			k := randIterKey(rng)
			if rng.IntN(4) == 0 {
				if err := db.Delete([]byte(k)); err != nil {
					t.Fatal(err)
				}
				delete(state, k)
			} else {
				v := randIterValue(rng)
				if err := db.Put([]byte(k), v); err != nil {
					t.Fatal(err)
				}
				state[k] = v
			}
		}
	}
	for round := range 12 {
		mutate(40)
		old := maps.Clone(state)
		snap, err := db.NewSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		mutate(20)

		// Over the DB, and over the snapshot.
		for i := range 8 {
			o, lo, hi, p := randIterOptions(rng)
			it, err := db.NewIter(o)
			if err != nil {
				t.Fatal(err)
			}
			checkIter(t, rng, it, newModelIter(state, lo, hi, p), fmt.Sprintf("round %d db iter %d %+v", round, i, o))
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
			it, err = snap.NewIter(o)
			if err != nil {
				t.Fatal(err)
			}
			checkIter(t, rng, it, newModelIter(old, lo, hi, p), fmt.Sprintf("round %d snapshot iter %d %+v", round, i, o))
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := snap.Close(); err != nil {
			t.Fatal(err)
		}

		// Over a transaction: its snapshot plus its writes as of NewIter.
		txn, err := db.Begin(true)
		if err != nil {
			t.Fatal(err)
		}
		view := maps.Clone(state)
		mutate(10) // after the transaction began: invisible to it
		for i := range 8 {
			for range rng.IntN(12) {
				k := randIterKey(rng)
				if rng.IntN(3) == 0 {
					if err := txn.Delete([]byte(k)); err != nil {
						t.Fatal(err)
					}
					delete(view, k)
				} else {
					v := randIterValue(rng)
					if err := txn.Put([]byte(k), v); err != nil {
						t.Fatal(err)
					}
					view[k] = v
				}
			}
			o, lo, hi, p := randIterOptions(rng)
			it, err := txn.NewIter(o)
			if err != nil {
				t.Fatal(err)
			}
			m := newModelIter(maps.Clone(view), lo, hi, p)
			// Writes after NewIter are not seen by it.
			if err := txn.Put([]byte("a"), []byte("later")); err != nil {
				t.Fatal(err)
			}
			if err := txn.Delete([]byte("b")); err != nil {
				t.Fatal(err)
			}
			view["a"] = []byte("later")
			delete(view, "b")
			checkIter(t, rng, it, m, fmt.Sprintf("round %d txn iter %d %+v", round, i, o))
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIteratorMisuse(t *testing.T) {
	db := openTxnDB(t)
	if err := db.Put([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Unpositioned.
	if it.Valid() {
		t.Fatal("it.Valid() is true")
	}
	if it.Key() != nil {
		t.Fatalf("it.Key() = %v, want nil", it.Key())
	}
	v, err := it.Value()
	if err != nil {
		t.Fatal(err)
	}
	if v != nil {
		t.Fatalf("v = %v, want nil", v)
	}
	if it.Next() {
		t.Fatal("it.Next() is true")
	}
	if it.Prev() {
		t.Fatal("it.Prev() is true")
	}
	if !it.First() {
		t.Fatal("it.First() is false")
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := it.Close(); !errors.Is(err, heapkv.ErrIterClosed) {
		t.Fatalf("it.Close() = %v, want %v", err, heapkv.ErrIterClosed)
	}
	if it.First() {
		t.Fatal("it.First() is true")
	}
	if it.SeekGE([]byte("a")) {
		t.Fatal("it.SeekGE([]byte(\"a\")) is true")
	}
	if it.Key() != nil {
		t.Fatalf("it.Key() = %v, want nil", it.Key())
	}
	_, err = it.Value()
	if !errors.Is(err, heapkv.ErrIterClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrIterClosed)
	}
	if err := it.Error(); !errors.Is(err, heapkv.ErrIterClosed) {
		t.Fatalf("it.Error() = %v, want %v", err, heapkv.ErrIterClosed)
	}

	// Snapshot misuse; an iterator outlives its snapshot's Close.
	snap, err := db.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	it, err = snap.NewIter(&heapkv.IterOptions{LowerBound: []byte("b"), UpperBound: []byte("a")}) // empty
	if err != nil {
		t.Fatal(err)
	}
	if it.First() {
		t.Fatal("it.First() is true")
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	it, err = snap.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("b"), []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	if err := snap.Close(); !errors.Is(err, heapkv.ErrSnapshotClosed) {
		t.Fatalf("snap.Close() = %v, want %v", err, heapkv.ErrSnapshotClosed)
	}
	_, err = snap.Get([]byte("a"))
	if !errors.Is(err, heapkv.ErrSnapshotClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrSnapshotClosed)
	}
	_, err = snap.NewIter(nil)
	if !errors.Is(err, heapkv.ErrSnapshotClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrSnapshotClosed)
	}
	if !it.Last() {
		t.Fatal("it.Last() is false")
	}
	if string(it.Key()) != "a" {
		t.Fatalf("string(it.Key()) = %v, want %v", string(it.Key()), "a")
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.OpenIterators+st.OpenSnapshots != 0 {
		t.Fatalf("st.OpenIterators+st.OpenSnapshots = %v, want 0", st.OpenIterators+st.OpenSnapshots)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Scan with a nil error pointer did not panic")
			}
		}()
		db.Scan(nil, nil)
	}()
}
