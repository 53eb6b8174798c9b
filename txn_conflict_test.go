package heapkv_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/heapkv/heapkv"
)

// Black-box tests of transactions' conflict detection: write-write and
// read-write conflicts, serializable ranges, transactions of one commit
// group.

// commitBoth runs first and second as concurrent transactions: both begin,
// first commits, then second; it returns second's Commit error.
func commitBoth(t *testing.T, db *heapkv.DB, opts *heapkv.TxnOptions, first, second func(*heapkv.Txn)) error {
	t.Helper()
	t1, err := db.BeginTxn(opts)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := db.BeginTxn(opts)
	if err != nil {
		t.Fatal(err)
	}
	first(t1)
	second(t2)
	if err := t1.Commit(); err != nil {
		t.Fatal(err)
	}
	return t2.Commit()
}

func put(k, v string) func(*heapkv.Txn) {
	return func(txn *heapkv.Txn) {
		if err := txn.Put([]byte(k), []byte(v)); err != nil {
			panic(err)
		}
	}
}

func get(k string) func(*heapkv.Txn) {
	return func(txn *heapkv.Txn) { txn.Get([]byte(k)) }
}

func both(fs ...func(*heapkv.Txn)) func(*heapkv.Txn) {
	return func(txn *heapkv.Txn) {
		for _, f := range fs {
			f(txn)
		}
	}
}

func TestTxnConflicts(t *testing.T) {
	db := openTxnDB(t)
	si := &heapkv.TxnOptions{}
	ser := &heapkv.TxnOptions{Serializable: true}
	if err := db.Put([]byte("x"), []byte("0")); err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("y"), []byte("0")); err != nil {
		t.Fatal(err)
	}

	// Write-write: the later committer fails and writes nothing.
	err := commitBoth(t, db, si, put("x", "1"), both(put("x", "2"), put("z", "2")))
	if !errors.Is(err, heapkv.ErrConflict) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrConflict)
	}
	if !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("conflict error %q does not name the key", err)
	}
	v, _ := db.Get([]byte("x"))
	if string(v) != "1" {
		t.Fatalf("string(v) = %v, want %v", string(v), "1")
	}
	_, err = db.Get([]byte("z"))
	if !errors.Is(err, heapkv.ErrNotFound) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrNotFound)
	}

	// Disjoint writes both commit.
	if err := commitBoth(t, db, si, put("x", "3"), put("y", "3")); err != nil {
		t.Fatal(err)
	}

	// Write skew: each reads both and writes one. Snapshot isolation lets
	// both commit; serializable fails the second.
	skew := func(w string) func(*heapkv.Txn) { return both(get("x"), get("y"), put(w, "skew")) }
	if err := commitBoth(t, db, si, skew("x"), skew("y")); err != nil {
		t.Fatal(err)
	}
	if err := commitBoth(t, db, ser, skew("x"), skew("y")); !errors.Is(err, heapkv.ErrConflict) {
		t.Fatalf("commitBoth(t, db, ser, skew(\"x\"), skew(\"y\")) = %v, want %v", err, heapkv.ErrConflict)
	}

	// Serializable: reading a missing key that another commit creates.
	if err := commitBoth(t, db, ser, put("new", "1"), both(get("new"), put("other", "1"))); !errors.Is(err, heapkv.ErrConflict) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrConflict)
	}
	// A read of a key written by a commit before the transaction began is
	// no conflict.
	if err := commitBoth(t, db, ser, put("a", "1"), both(get("y"), put("b", "1"))); err != nil {
		t.Fatal(err)
	}

	// A plain Put conflicts with a transaction that writes (SI) or read
	// (serializable) the key; a read-only transaction never conflicts.
	txn, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Put([]byte("x"), []byte("txn")); err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("x"), []byte("plain")); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); !errors.Is(err, heapkv.ErrConflict) {
		t.Fatalf("txn.Commit() = %v, want %v", err, heapkv.ErrConflict)
	}
	txn, err = db.BeginTxn(ser)
	if err != nil {
		t.Fatal(err)
	}
	txn.Get([]byte("x"))
	if err := txn.Put([]byte("y"), []byte("txn")); err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	b.Put([]byte("q"), nil)
	b.Delete([]byte("x"))
	if err := db.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); !errors.Is(err, heapkv.ErrConflict) {
		t.Fatalf("txn.Commit() = %v, want %v", err, heapkv.ErrConflict)
	}

	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.TxnConflicts != 5 {
		t.Fatalf("Stats.TxnConflicts = %d, want 5", st.TxnConflicts)
	}
	if st.TxnTrackedKeys != 0 {
		t.Fatalf("st.TxnTrackedKeys = %v, want 0", st.TxnTrackedKeys)
	} // no transaction open: pruned
}

// TestTxnSerializableRanges: a serializable transaction conflicts with a
// write into the part of a range its iterator walked (phantoms), and not
// with writes outside it.
func TestTxnSerializableRanges(t *testing.T) {
	db := openTxnDB(t)
	for _, k := range []string{"b", "d", "f", "h"} {
		if err := db.Put([]byte(k), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	ser := &heapkv.TxnOptions{Serializable: true}
	// walk reads keys from c up to and including f, then stops.
	walk := func(txn *heapkv.Txn) {
		it, err := txn.NewIter(&heapkv.IterOptions{LowerBound: []byte("c"), UpperBound: []byte("z")})
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		n := 0
		for ok := it.First(); ok; ok = it.Next() {
			if n++; n == 2 {
				break
			}
		}
		if err := txn.Put([]byte("sum"), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		key      string
		conflict bool
	}{
		{"a", false}, {"c", true}, {"e", true}, {"f", true}, {"f\x00", false}, {"g", false}, {"zz", false},
	} {
		err := commitBoth(t, db, ser, put(tc.key, "new"), walk)
		if tc.conflict {
			if !errors.Is(err, heapkv.ErrConflict) {
				t.Fatalf("%v: err = %v, want %v", tc.key, err, heapkv.ErrConflict)
			}
		} else {
			if err != nil {
				t.Fatalf("%v: %v", tc.key, err)
			}
		}
		if strings.Contains("bdfh", tc.key) {
			if err := db.Put([]byte(tc.key), []byte(tc.key)); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := db.Delete([]byte(tc.key)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A walk that runs off the end read everything to the upper bound;
	// a reverse walk from the end too.
	full := func(rev bool) func(txn *heapkv.Txn) {
		return func(txn *heapkv.Txn) {
			it, err := txn.NewIter(&heapkv.IterOptions{Prefix: []byte("p")})
			if err != nil {
				t.Fatal(err)
			}
			if rev {
				for ok := it.Last(); ok; ok = it.Prev() {
				}
			} else {
				for ok := it.First(); ok; ok = it.Next() {
				}
			}
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
			if err := txn.Put([]byte("sum"), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, rev := range []bool{false, true} {
		if err := commitBoth(t, db, ser, put("pzzz", "1"), full(rev)); !errors.Is(err, heapkv.ErrConflict) {
			t.Fatalf("err = %v, want %v", err, heapkv.ErrConflict)
		}
		if err := commitBoth(t, db, ser, put("p", "1"), full(rev)); !errors.Is(err, heapkv.ErrConflict) {
			t.Fatalf("commitBoth(t, db, ser, put(\"p\", \"1\"), full(rev)) = %v, want %v", err, heapkv.ErrConflict)
		}
		if err := commitBoth(t, db, ser, put("q", "1"), full(rev)); err != nil {
			t.Fatal(err)
		}
		if err := commitBoth(t, db, ser, put("o\xff", "1"), full(rev)); err != nil {
			t.Fatal(err)
		}
	}
	// With snapshot isolation ranges do not count.
	if err := commitBoth(t, db, &heapkv.TxnOptions{}, put("e", "1"), walk); err != nil {
		t.Fatal(err)
	}
}

// TestTxnSameGroup: conflicting transactions that commit in the same group
// see each other (the check registers writes before the next request).
func TestTxnSameGroup(t *testing.T) {
	db := openTxnDB(t)
	const n = 16
	for round := range 20 {
		txns := make([]*heapkv.Txn, n)
		for i := range txns {
			var err error
			txns[i], err = db.Begin(true)
			if err != nil {
				t.Fatal(err)
			}
			if err := txns[i].Put([]byte("hot"), fmt.Appendf(nil, "%d-%d", round, i)); err != nil {
				t.Fatal(err)
			}
		}
		errs := make(chan error, n)
		for _, txn := range txns {
			go func() { errs <- txn.Commit() }()
		}
		ok := 0
		for range n {
			if err := <-errs; err == nil {
				ok++
			} else {
				if !errors.Is(err, heapkv.ErrConflict) {
					t.Fatalf("err = %v, want %v", err, heapkv.ErrConflict)
				}
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: exactly one of the conflicting transactions commits: ok = %v, want %v", round, ok, 1)
		}
	}
}
