package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/heapkv/heapkv"
)

// Black-box tests of transactions: the API, its misuse, snapshots, Close
// with open readers (conflicts: txn_conflict_test.go).

// txnLogger drops the engine's log lines.
var txnLogger = slog.New(slog.DiscardHandler)

// checkTxnDB runs Check: consistent, no leaked, dangling or doubly used
// blocks, and the key count Stats reports.
func checkTxnDB(t testing.TB, db *heapkv.DB) {
	t.Helper()
	rep, err := db.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.LeakedBlocks+rep.DanglingBlocks+rep.DoubleRefBlocks != 0 {
		t.Fatalf("Check: %v", rep)
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Keys != st.Keys {
		t.Fatalf("rep.Keys = %v, want %v", rep.Keys, st.Keys)
	}
}

// openTxnDB opens a database in a temp dir that values above 64 bytes go to
// the heap of, closed at cleanup.
func openTxnDB(t testing.TB) *heapkv.DB {
	t.Helper()
	db := openTestDB(t, t.TempDir(), &heapkv.Options{InlineThreshold: 64, NoSync: true, Logger: txnLogger})
	return db
}

func val(key string, n int) []byte {
	return bytes.Repeat([]byte(key+"."), n/(len(key)+1)+1)[:n]
}

func TestTxnUpdateView(t *testing.T) {
	db := openTxnDB(t)
	if err := db.Put([]byte("a"), []byte("old")); err != nil {
		t.Fatal(err)
	}
	err := db.Update(func(txn *heapkv.Txn) error {
		v, err := txn.Get([]byte("a"))
		if err != nil {
			t.Fatal(err)
		}
		if string(v) != "old" {
			t.Fatalf("string(v) = %v, want %v", string(v), "old")
		}
		if err := txn.Put([]byte("a"), val("a", 5000)); err != nil {
			t.Fatal(err)
		} // heap
		if err := txn.Put([]byte("b"), []byte("inline")); err != nil {
			t.Fatal(err)
		}
		if err := txn.Delete([]byte("c")); err != nil {
			t.Fatal(err)
		}
		v, err = txn.Get([]byte("a")) // reads its own writes
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v, val("a", 5000)) {
			t.Fatalf("v = %.64q, want %.64q", v, val("a", 5000))
		}
		v[0] = 'X' // a copy: the buffered write is unaffected
		v, _ = txn.Get([]byte("a"))
		if !bytes.Equal(v, val("a", 5000)) {
			t.Fatalf("v = %.64q, want %.64q", v, val("a", 5000))
		}
		_, err = txn.Get([]byte("c"))
		if !errors.Is(err, heapkv.ErrNotFound) {
			t.Fatalf("err = %v, want %v", err, heapkv.ErrNotFound)
		}
		// Not visible outside before commit.
		v, err = db.Get([]byte("a"))
		if err != nil {
			t.Fatal(err)
		}
		if string(v) != "old" {
			t.Fatalf("string(v) = %v, want %v", string(v), "old")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(txn *heapkv.Txn) error {
		v, err := txn.Get([]byte("a"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v, val("a", 5000)) {
			t.Fatalf("v = %.64q, want %.64q", v, val("a", 5000))
		}
		if err := txn.Put([]byte("x"), nil); !errors.Is(err, heapkv.ErrReadOnlyTxn) {
			t.Fatalf("txn.Put([]byte(\"x\"), nil) = %v, want %v", err, heapkv.ErrReadOnlyTxn)
		}
		if err := txn.Delete([]byte("x")); !errors.Is(err, heapkv.ErrReadOnlyTxn) {
			t.Fatalf("txn.Delete([]byte(\"x\")) = %v, want %v", err, heapkv.ErrReadOnlyTxn)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// An error from fn rolls back; View returns fn's error.
	boom := errors.New("boom")
	if err := db.Update(func(txn *heapkv.Txn) error {
		if err := txn.Put([]byte("b"), []byte("never")); err != nil {
			t.Fatal(err)
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if err := db.View(func(*heapkv.Txn) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("db.View(func(*heapkv.Txn) error { return boom }) = %v, want %v", err, boom)
	}
	// A panic rolls back too.
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic in fn did not reach the caller")
			}
		}()
		db.Update(func(txn *heapkv.Txn) error {
			txn.Put([]byte("b"), []byte("never"))
			panic("in fn")
		})
	}()
	v, err := db.Get([]byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	if string(v) != "inline" {
		t.Fatalf("string(v) = %v, want %v", string(v), "inline")
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.OpenTxns != 0 {
		t.Fatalf("st.OpenTxns = %v, want 0", st.OpenTxns)
	}
	if st.TxnCommits != 1 {
		t.Fatalf("Stats.TxnCommits = %d, want 1", st.TxnCommits)
	}
}

func TestTxnMisuse(t *testing.T) {
	db := openTxnDB(t)
	txn, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Put([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := txn.Put(nil, []byte("v")); !errors.Is(err, heapkv.ErrEmptyKey) {
		t.Fatalf("txn.Put(nil, []byte(\"v\")) = %v, want %v", err, heapkv.ErrEmptyKey)
	}
	if err := txn.Put(make([]byte, heapkv.MaxKeySize+1), nil); !errors.Is(err, heapkv.ErrKeyTooLarge) {
		t.Fatalf("txn.Put(make([]byte, heapkv.MaxKeySize+1), nil) = %v, want %v", err, heapkv.ErrKeyTooLarge)
	}
	if err := txn.Put([]byte("k"), make([]byte, heapkv.MaxValueSize+1)); !errors.Is(err, heapkv.ErrValueTooLarge) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrValueTooLarge)
	}
	if err := txn.Delete(nil); !errors.Is(err, heapkv.ErrEmptyKey) {
		t.Fatalf("txn.Delete(nil) = %v, want %v", err, heapkv.ErrEmptyKey)
	}
	_, err = txn.Get(nil)
	if !errors.Is(err, heapkv.ErrEmptyKey) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrEmptyKey)
	}
	it, err := txn.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !it.First() {
		t.Fatal("it.First() is false")
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}

	// Everything after the end fails with ErrTxnClosed; Rollback is a no-op.
	if err := txn.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := txn.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); !errors.Is(err, heapkv.ErrTxnClosed) {
		t.Fatalf("txn.Commit() = %v, want %v", err, heapkv.ErrTxnClosed)
	}
	_, err = txn.Get([]byte("k"))
	if !errors.Is(err, heapkv.ErrTxnClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrTxnClosed)
	}
	if err := txn.Put([]byte("k"), nil); !errors.Is(err, heapkv.ErrTxnClosed) {
		t.Fatalf("txn.Put([]byte(\"k\"), nil) = %v, want %v", err, heapkv.ErrTxnClosed)
	}
	if err := txn.Delete([]byte("k")); !errors.Is(err, heapkv.ErrTxnClosed) {
		t.Fatalf("txn.Delete([]byte(\"k\")) = %v, want %v", err, heapkv.ErrTxnClosed)
	}
	_, err = txn.NewIter(nil)
	if !errors.Is(err, heapkv.ErrTxnClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrTxnClosed)
	}
	var serr error
	for range txn.Scan(nil, &serr) {
		t.Fatal("scan of an ended transaction yielded")
	}
	if !errors.Is(serr, heapkv.ErrTxnClosed) {
		t.Fatalf("serr = %v, want %v", serr, heapkv.ErrTxnClosed)
	}
	// Its iterator was closed with it.
	if it.Next() {
		t.Fatal("it.Next() is true")
	}
	if err := it.Error(); !errors.Is(err, heapkv.ErrTxnClosed) {
		t.Fatalf("it.Error() = %v, want %v", err, heapkv.ErrTxnClosed)
	}
	_, err = it.Value()
	if !errors.Is(err, heapkv.ErrTxnClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrTxnClosed)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	} // closed by the txn: harmless

	// Commit after Rollback.
	txn, err = db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Put([]byte("k"), []byte("rolled back")); err != nil {
		t.Fatal(err)
	}
	if err := txn.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); !errors.Is(err, heapkv.ErrTxnClosed) {
		t.Fatalf("txn.Commit() = %v, want %v", err, heapkv.ErrTxnClosed)
	}
	v, err := db.Get([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	if string(v) != "v" {
		t.Fatalf("string(v) = %v, want %v", string(v), "v")
	}

	// A read-only transaction and a read-write one without writes commit.
	for _, update := range []bool{false, true} {
		txn, err = db.Begin(update)
		if err != nil {
			t.Fatal(err)
		}
		_, err = txn.Get([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.OpenTxns+st.OpenIterators+st.OpenSnapshots != 0 {
		t.Fatalf("st.OpenTxns+st.OpenIterators+st.OpenSnapshots = %v, want 0", st.OpenTxns+st.OpenIterators+st.OpenSnapshots)
	}
	if st.TxnTrackedKeys != 0 {
		t.Fatalf("st.TxnTrackedKeys = %v, want 0", st.TxnTrackedKeys)
	}
}

func TestTxnTooLarge(t *testing.T) {
	db := openTxnDB(t)
	txn, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Rollback()
	for i := range heapkv.MaxTxnOps {
		if err := txn.Put(fmt.Appendf(nil, "k%06d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.Put([]byte("k000000"), []byte("rewrite: no new key")); err != nil {
		t.Fatal(err)
	}
	if err := txn.Put([]byte("one-too-many"), nil); !errors.Is(err, heapkv.ErrTxnTooLarge) {
		t.Fatalf("txn.Put([]byte(\"one-too-many\"), nil) = %v, want %v", err, heapkv.ErrTxnTooLarge)
	}
	if err := txn.Delete([]byte("one-too-many")); !errors.Is(err, heapkv.ErrTxnTooLarge) {
		t.Fatalf("txn.Delete([]byte(\"one-too-many\")) = %v, want %v", err, heapkv.ErrTxnTooLarge)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	} // still usable: commits what it holds
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Keys != heapkv.MaxTxnOps {
		t.Fatalf("Stats.Keys = %d, want %d", st.Keys, heapkv.MaxTxnOps)
	}

	txn, err = db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Rollback()
	big := make([]byte, heapkv.MaxTxnBytes/2)
	if err := txn.Put([]byte("big1"), big); err != nil {
		t.Fatal(err)
	}
	if err := txn.Put([]byte("big2"), big); !errors.Is(err, heapkv.ErrTxnTooLarge) {
		t.Fatalf("txn.Put([]byte(\"big2\"), big) = %v, want %v", err, heapkv.ErrTxnTooLarge)
	}
	if err := txn.Put([]byte("big1"), big[:10]); err != nil {
		t.Fatal(err)
	} // replacing frees room
	if err := txn.Put([]byte("big2"), big); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(); err != nil {
		t.Fatal(err)
	}
	v, err := db.Get([]byte("big2"))
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != len(big) {
		t.Fatalf("len(v) = %d, want %d", len(v), len(big))
	}
}

func TestTxnSnapshotReads(t *testing.T) {
	db := openTxnDB(t)
	if err := db.Put([]byte("a"), val("a1", 3000)); err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("b"), []byte("b1")); err != nil {
		t.Fatal(err)
	}
	txn, err := db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Rollback()
	if err := db.Put([]byte("a"), val("a2", 3000)); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("c"), []byte("c2")); err != nil {
		t.Fatal(err)
	}
	v, err := txn.Get([]byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v, val("a1", 3000)) {
		t.Fatalf("v = %.64q, want %.64q", v, val("a1", 3000))
	}
	v, err = txn.Get([]byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	if string(v) != "b1" {
		t.Fatalf("string(v) = %v, want %v", string(v), "b1")
	}
	_, err = txn.Get([]byte("c"))
	if !errors.Is(err, heapkv.ErrNotFound) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrNotFound)
	}
}

// TestCloseWithOpenReaders: Close does not wait for open snapshots,
// iterators and transactions: it closes them, and they report ErrClosed.
func TestCloseWithOpenReaders(t *testing.T) {
	db := openTestDB(t, t.TempDir(), &heapkv.Options{InlineThreshold: 64, Logger: txnLogger})
	for i := range 10 {
		if err := db.Put(fmt.Appendf(nil, "k%d", i), val("v", 100*i)); err != nil {
			t.Fatal(err)
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
	if !it.First() {
		t.Fatal("it.First() is false")
	}
	sit, err := snap.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	txn, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Put([]byte("t"), []byte("lost")); err != nil {
		t.Fatal(err)
	}
	tit, err := txn.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := [3]int{st.OpenSnapshots, st.OpenIterators, st.OpenTxns}; got != [3]int{1, 3, 1} {
		t.Fatalf("open snapshots, iterators, txns = %v, want [1 3 1]", got)
	}
	if st.OldestReaderAge == 0 {
		t.Fatal("Stats.OldestReaderAge = 0 with readers open")
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = snap.Get([]byte("k1"))
	if !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrClosed)
	}
	_, err = snap.NewIter(nil)
	if !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrClosed)
	}
	for _, it := range []*heapkv.Iterator{it, sit, tit} {
		if it.Next() {
			t.Fatal("it.Next() is true")
		}
		if it.First() {
			t.Fatal("it.First() is true")
		}
		if it.Key() != nil {
			t.Fatalf("it.Key() = %v, want nil", it.Key())
		}
		if err := it.Error(); !errors.Is(err, heapkv.ErrClosed) {
			t.Fatalf("it.Error() = %v, want %v", err, heapkv.ErrClosed)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if err := it.Close(); !errors.Is(err, heapkv.ErrIterClosed) {
			t.Fatalf("it.Close() = %v, want %v", err, heapkv.ErrIterClosed)
		}
	}
	if err := txn.Commit(); !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("txn.Commit() = %v, want %v", err, heapkv.ErrClosed)
	}
	if err := txn.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = db.Begin(true)
	if !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrClosed)
	}
	_, err = db.NewSnapshot()
	if !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrClosed)
	}
	_, err = db.NewIter(nil)
	if !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrClosed)
	}
	if err := db.View(func(*heapkv.Txn) error { return nil }); !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("db.View(func(*heapkv.Txn) error { return nil }) = %v, want %v", err, heapkv.ErrClosed)
	}
}

// TestTxnTrackerBound: when more keys are written than the conflict
// tracker keeps while a transaction is open, the oldest history is dropped
// and that transaction fails with ErrConflict rather than commit unchecked;
// transactions that began after the dropped history are unaffected.
func TestTxnTrackerBound(t *testing.T) {
	defer heapkv.SetMaxTrackedKeys(100)()
	db := openTxnDB(t)
	old, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Put([]byte("mine"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	for i := range 150 {
		if err := db.Put(fmt.Appendf(nil, "other-%03d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.TxnTrackedKeys > int64(100) {
		t.Fatalf("st.TxnTrackedKeys = %v, want <= int64(100) = %v", st.TxnTrackedKeys, int64(100))
	}
	young, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := young.Put([]byte("yours"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	err = old.Commit()
	if !errors.Is(err, heapkv.ErrConflict) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrConflict)
	}
	if !strings.Contains(err.Error(), "history") {
		t.Fatalf("conflict error %q does not say the history was pruned", err)
	}
	if err := young.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotScan(t *testing.T) {
	db := openTxnDB(t)
	for i := range 20 {
		if err := db.Put(fmt.Appendf(nil, "s%02d", i), val("v", i*20)); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := db.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if err := db.Delete([]byte("s05")); err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("s99"), nil); err != nil {
		t.Fatal(err)
	}
	var serr error
	var keys []string
	for k, v := range snap.Scan([]byte("s"), &serr) {
		if !bytes.Equal(v, val("v", len(keys)*20)) {
			t.Fatalf("v = %.64q, want %.64q", v, val("v", len(keys)*20))
		}
		keys = append(keys, string(k))
	}
	if serr != nil {
		t.Fatal(serr)
	}
	if len(keys) != 20 {
		t.Fatalf("len(keys) = %d, want %d", len(keys), 20)
	}
	if keys[5] != "s05" {
		t.Fatalf("keys[5] = %v, want %v", keys[5], "s05")
	}
}
