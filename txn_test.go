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
	"github.com/stretchr/testify/require"
)

// Black-box tests of transactions: the API, its misuse, conflicts.

// txnLogger drops the engine's log lines.
var txnLogger = slog.New(slog.DiscardHandler)

// checkTxnDB runs Check: consistent, no leaked, dangling or doubly used
// blocks, and the key count Stats reports.
func checkTxnDB(t testing.TB, db *heapkv.DB) {
	t.Helper()
	rep, err := db.Check(context.Background())
	require.NoError(t, err)
	require.Zero(t, rep.LeakedBlocks+rep.DanglingBlocks+rep.DoubleRefBlocks, "%v", rep)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, st.Keys, rep.Keys)
}

// openTxnDB opens a database in a temp dir that values above 64 bytes go to
// the heap of, closed at cleanup.
func openTxnDB(t testing.TB) *heapkv.DB {
	t.Helper()
	db, err := heapkv.Open(t.TempDir(), &heapkv.Options{InlineThreshold: 64, NoSync: true, Logger: txnLogger})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func val(key string, n int) []byte {
	return bytes.Repeat([]byte(key+"."), n/(len(key)+1)+1)[:n]
}

func TestTxnUpdateView(t *testing.T) {
	db := openTxnDB(t)
	require.NoError(t, db.Put([]byte("a"), []byte("old")))
	err := db.Update(func(txn *heapkv.Txn) error {
		v, err := txn.Get([]byte("a"))
		require.NoError(t, err)
		require.Equal(t, "old", string(v))
		require.NoError(t, txn.Put([]byte("a"), val("a", 5000))) // heap
		require.NoError(t, txn.Put([]byte("b"), []byte("inline")))
		require.NoError(t, txn.Delete([]byte("c")))
		v, err = txn.Get([]byte("a")) // reads its own writes
		require.NoError(t, err)
		require.Equal(t, val("a", 5000), v)
		v[0] = 'X' // a copy: the buffered write is unaffected
		v, _ = txn.Get([]byte("a"))
		require.Equal(t, val("a", 5000), v)
		_, err = txn.Get([]byte("c"))
		require.ErrorIs(t, err, heapkv.ErrNotFound)
		// Not visible outside before commit.
		v, err = db.Get([]byte("a"))
		require.NoError(t, err)
		require.Equal(t, "old", string(v))
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, db.View(func(txn *heapkv.Txn) error {
		v, err := txn.Get([]byte("a"))
		require.NoError(t, err)
		require.Equal(t, val("a", 5000), v)
		require.ErrorIs(t, txn.Put([]byte("x"), nil), heapkv.ErrReadOnlyTxn)
		require.ErrorIs(t, txn.Delete([]byte("x")), heapkv.ErrReadOnlyTxn)
		return nil
	}))

	// An error from fn rolls back; View returns fn's error.
	boom := errors.New("boom")
	require.ErrorIs(t, db.Update(func(txn *heapkv.Txn) error {
		require.NoError(t, txn.Put([]byte("b"), []byte("never")))
		return boom
	}), boom)
	require.ErrorIs(t, db.View(func(*heapkv.Txn) error { return boom }), boom)
	// A panic rolls back too.
	func() {
		defer func() { require.NotNil(t, recover()) }()
		db.Update(func(txn *heapkv.Txn) error {
			txn.Put([]byte("b"), []byte("never"))
			panic("in fn")
		})
	}()
	v, err := db.Get([]byte("b"))
	require.NoError(t, err)
	require.Equal(t, "inline", string(v))
	st, err := db.Stats()
	require.NoError(t, err)
	require.Zero(t, st.OpenTxns)
	require.EqualValues(t, 1, st.TxnCommits)
}

func TestTxnMisuse(t *testing.T) {
	db := openTxnDB(t)
	txn, err := db.Begin(true)
	require.NoError(t, err)
	require.NoError(t, txn.Put([]byte("k"), []byte("v")))
	require.ErrorIs(t, txn.Put(nil, []byte("v")), heapkv.ErrEmptyKey)
	require.ErrorIs(t, txn.Put(make([]byte, heapkv.MaxKeySize+1), nil), heapkv.ErrKeyTooLarge)
	require.ErrorIs(t, txn.Put([]byte("k"), make([]byte, heapkv.MaxValueSize+1)), heapkv.ErrValueTooLarge)
	require.ErrorIs(t, txn.Delete(nil), heapkv.ErrEmptyKey)
	_, err = txn.Get(nil)
	require.ErrorIs(t, err, heapkv.ErrEmptyKey)
	it, err := txn.NewIter(nil)
	require.NoError(t, err)
	require.True(t, it.First())
	require.NoError(t, txn.Commit())

	// Everything after the end fails with ErrTxnClosed; Rollback is a no-op.
	require.NoError(t, txn.Rollback())
	require.NoError(t, txn.Rollback())
	require.ErrorIs(t, txn.Commit(), heapkv.ErrTxnClosed)
	_, err = txn.Get([]byte("k"))
	require.ErrorIs(t, err, heapkv.ErrTxnClosed)
	require.ErrorIs(t, txn.Put([]byte("k"), nil), heapkv.ErrTxnClosed)
	require.ErrorIs(t, txn.Delete([]byte("k")), heapkv.ErrTxnClosed)
	_, err = txn.NewIter(nil)
	require.ErrorIs(t, err, heapkv.ErrTxnClosed)
	var serr error
	for range txn.Scan(nil, &serr) {
		t.Fatal("scan of an ended transaction yielded")
	}
	require.ErrorIs(t, serr, heapkv.ErrTxnClosed)
	// Its iterator was closed with it.
	require.False(t, it.Next())
	require.ErrorIs(t, it.Error(), heapkv.ErrTxnClosed)
	_, err = it.Value()
	require.ErrorIs(t, err, heapkv.ErrTxnClosed)
	require.NoError(t, it.Close()) // closed by the txn: harmless

	// Commit after Rollback.
	txn, err = db.Begin(true)
	require.NoError(t, err)
	require.NoError(t, txn.Put([]byte("k"), []byte("rolled back")))
	require.NoError(t, txn.Rollback())
	require.ErrorIs(t, txn.Commit(), heapkv.ErrTxnClosed)
	v, err := db.Get([]byte("k"))
	require.NoError(t, err)
	require.Equal(t, "v", string(v))

	// A read-only transaction and a read-write one without writes commit.
	for _, update := range []bool{false, true} {
		txn, err = db.Begin(update)
		require.NoError(t, err)
		_, err = txn.Get([]byte("k"))
		require.NoError(t, err)
		require.NoError(t, txn.Commit())
	}
	st, err := db.Stats()
	require.NoError(t, err)
	require.Zero(t, st.OpenTxns+st.OpenIterators+st.OpenSnapshots)
	require.Zero(t, st.TxnTrackedKeys)
}

func TestTxnTooLarge(t *testing.T) {
	db := openTxnDB(t)
	txn, err := db.Begin(true)
	require.NoError(t, err)
	defer txn.Rollback()
	for i := range heapkv.MaxTxnOps {
		require.NoError(t, txn.Put(fmt.Appendf(nil, "k%06d", i), nil))
	}
	require.NoError(t, txn.Put([]byte("k000000"), []byte("rewrite: no new key")))
	require.ErrorIs(t, txn.Put([]byte("one-too-many"), nil), heapkv.ErrTxnTooLarge)
	require.ErrorIs(t, txn.Delete([]byte("one-too-many")), heapkv.ErrTxnTooLarge)
	require.NoError(t, txn.Commit()) // still usable: commits what it holds
	st, err := db.Stats()
	require.NoError(t, err)
	require.EqualValues(t, heapkv.MaxTxnOps, st.Keys)

	txn, err = db.Begin(true)
	require.NoError(t, err)
	defer txn.Rollback()
	big := make([]byte, heapkv.MaxTxnBytes/2)
	require.NoError(t, txn.Put([]byte("big1"), big))
	require.ErrorIs(t, txn.Put([]byte("big2"), big), heapkv.ErrTxnTooLarge)
	require.NoError(t, txn.Put([]byte("big1"), big[:10])) // replacing frees room
	require.NoError(t, txn.Put([]byte("big2"), big))
	require.NoError(t, txn.Commit())
	v, err := db.Get([]byte("big2"))
	require.NoError(t, err)
	require.Len(t, v, len(big))
}

func TestTxnSnapshotReads(t *testing.T) {
	db := openTxnDB(t)
	require.NoError(t, db.Put([]byte("a"), val("a1", 3000)))
	require.NoError(t, db.Put([]byte("b"), []byte("b1")))
	txn, err := db.Begin(false)
	require.NoError(t, err)
	defer txn.Rollback()
	require.NoError(t, db.Put([]byte("a"), val("a2", 3000)))
	require.NoError(t, db.Delete([]byte("b")))
	require.NoError(t, db.Put([]byte("c"), []byte("c2")))
	v, err := txn.Get([]byte("a"))
	require.NoError(t, err)
	require.Equal(t, val("a1", 3000), v)
	v, err = txn.Get([]byte("b"))
	require.NoError(t, err)
	require.Equal(t, "b1", string(v))
	_, err = txn.Get([]byte("c"))
	require.ErrorIs(t, err, heapkv.ErrNotFound)
}

// commitBoth runs first and second as concurrent transactions: both begin,
// first commits, then second; it returns second's Commit error.
func commitBoth(t *testing.T, db *heapkv.DB, opts *heapkv.TxnOptions, first, second func(*heapkv.Txn)) error {
	t.Helper()
	t1, err := db.BeginTxn(opts)
	require.NoError(t, err)
	t2, err := db.BeginTxn(opts)
	require.NoError(t, err)
	first(t1)
	second(t2)
	require.NoError(t, t1.Commit())
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
	require.NoError(t, db.Put([]byte("x"), []byte("0")))
	require.NoError(t, db.Put([]byte("y"), []byte("0")))

	// Write-write: the later committer fails and writes nothing.
	err := commitBoth(t, db, si, put("x", "1"), both(put("x", "2"), put("z", "2")))
	require.ErrorIs(t, err, heapkv.ErrConflict)
	require.True(t, strings.Contains(err.Error(), `"x"`), err)
	v, _ := db.Get([]byte("x"))
	require.Equal(t, "1", string(v))
	_, err = db.Get([]byte("z"))
	require.ErrorIs(t, err, heapkv.ErrNotFound)

	// Disjoint writes both commit.
	require.NoError(t, commitBoth(t, db, si, put("x", "3"), put("y", "3")))

	// Write skew: each reads both and writes one. Snapshot isolation lets
	// both commit; serializable fails the second.
	skew := func(w string) func(*heapkv.Txn) { return both(get("x"), get("y"), put(w, "skew")) }
	require.NoError(t, commitBoth(t, db, si, skew("x"), skew("y")))
	require.ErrorIs(t, commitBoth(t, db, ser, skew("x"), skew("y")), heapkv.ErrConflict)

	// Serializable: reading a missing key that another commit creates.
	require.ErrorIs(t, commitBoth(t, db, ser, put("new", "1"), both(get("new"), put("other", "1"))), heapkv.ErrConflict)
	// A read of a key written by a commit before the transaction began is
	// no conflict.
	require.NoError(t, commitBoth(t, db, ser, put("a", "1"), both(get("y"), put("b", "1"))))

	// A plain Put conflicts with a transaction that writes (SI) or read
	// (serializable) the key; a read-only transaction never conflicts.
	txn, err := db.Begin(true)
	require.NoError(t, err)
	require.NoError(t, txn.Put([]byte("x"), []byte("txn")))
	require.NoError(t, db.Put([]byte("x"), []byte("plain")))
	require.ErrorIs(t, txn.Commit(), heapkv.ErrConflict)
	txn, err = db.BeginTxn(ser)
	require.NoError(t, err)
	txn.Get([]byte("x"))
	require.NoError(t, txn.Put([]byte("y"), []byte("txn")))
	b := db.NewBatch()
	b.Put([]byte("q"), nil)
	b.Delete([]byte("x"))
	require.NoError(t, db.Apply(b, nil))
	require.ErrorIs(t, txn.Commit(), heapkv.ErrConflict)

	st, err := db.Stats()
	require.NoError(t, err)
	require.EqualValues(t, 5, st.TxnConflicts)
	require.Zero(t, st.TxnTrackedKeys) // no transaction open: pruned
}

// TestTxnSerializableRanges: a serializable transaction conflicts with a
// write into the part of a range its iterator walked (phantoms), and not
// with writes outside it.
func TestTxnSerializableRanges(t *testing.T) {
	db := openTxnDB(t)
	for _, k := range []string{"b", "d", "f", "h"} {
		require.NoError(t, db.Put([]byte(k), []byte(k)))
	}
	ser := &heapkv.TxnOptions{Serializable: true}
	// walk reads keys from c up to and including f, then stops.
	walk := func(txn *heapkv.Txn) {
		it, err := txn.NewIter(&heapkv.IterOptions{LowerBound: []byte("c"), UpperBound: []byte("z")})
		require.NoError(t, err)
		defer it.Close()
		n := 0
		for ok := it.First(); ok; ok = it.Next() {
			if n++; n == 2 {
				break
			}
		}
		require.NoError(t, txn.Put([]byte("sum"), []byte("x")))
	}
	for _, tc := range []struct {
		key      string
		conflict bool
	}{
		{"a", false}, {"c", true}, {"e", true}, {"f", true}, {"f\x00", false}, {"g", false}, {"zz", false},
	} {
		err := commitBoth(t, db, ser, put(tc.key, "new"), walk)
		if tc.conflict {
			require.ErrorIs(t, err, heapkv.ErrConflict, tc.key)
		} else {
			require.NoError(t, err, tc.key)
		}
		if strings.Contains("bdfh", tc.key) {
			require.NoError(t, db.Put([]byte(tc.key), []byte(tc.key)))
		} else {
			require.NoError(t, db.Delete([]byte(tc.key)))
		}
	}
	// A walk that runs off the end read everything to the upper bound;
	// a reverse walk from the end too.
	full := func(rev bool) func(txn *heapkv.Txn) {
		return func(txn *heapkv.Txn) {
			it, err := txn.NewIter(&heapkv.IterOptions{Prefix: []byte("p")})
			require.NoError(t, err)
			if rev {
				for ok := it.Last(); ok; ok = it.Prev() {
				}
			} else {
				for ok := it.First(); ok; ok = it.Next() {
				}
			}
			require.NoError(t, it.Close())
			require.NoError(t, txn.Put([]byte("sum"), []byte("x")))
		}
	}
	for _, rev := range []bool{false, true} {
		require.ErrorIs(t, commitBoth(t, db, ser, put("pzzz", "1"), full(rev)), heapkv.ErrConflict)
		require.ErrorIs(t, commitBoth(t, db, ser, put("p", "1"), full(rev)), heapkv.ErrConflict)
		require.NoError(t, commitBoth(t, db, ser, put("q", "1"), full(rev)))
		require.NoError(t, commitBoth(t, db, ser, put("o\xff", "1"), full(rev)))
	}
	// With snapshot isolation ranges do not count.
	require.NoError(t, commitBoth(t, db, &heapkv.TxnOptions{}, put("e", "1"), walk))
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
			require.NoError(t, err)
			require.NoError(t, txns[i].Put([]byte("hot"), fmt.Appendf(nil, "%d-%d", round, i)))
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
				require.ErrorIs(t, err, heapkv.ErrConflict)
			}
		}
		require.Equal(t, 1, ok, "round %d: exactly one of the conflicting transactions commits", round)
	}
}

// TestCloseWithOpenReaders: Close does not wait for open snapshots,
// iterators and transactions: it closes them, and they report ErrClosed.
func TestCloseWithOpenReaders(t *testing.T) {
	db, err := heapkv.Open(t.TempDir(), &heapkv.Options{InlineThreshold: 64, Logger: txnLogger})
	require.NoError(t, err)
	for i := range 10 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "k%d", i), val("v", 100*i)))
	}
	snap, err := db.NewSnapshot()
	require.NoError(t, err)
	it, err := db.NewIter(nil)
	require.NoError(t, err)
	require.True(t, it.First())
	sit, err := snap.NewIter(nil)
	require.NoError(t, err)
	txn, err := db.Begin(true)
	require.NoError(t, err)
	require.NoError(t, txn.Put([]byte("t"), []byte("lost")))
	tit, err := txn.NewIter(nil)
	require.NoError(t, err)
	st, err := db.Stats()
	require.NoError(t, err)
	require.Equal(t, [3]int{1, 3, 1}, [3]int{st.OpenSnapshots, st.OpenIterators, st.OpenTxns})
	require.NotZero(t, st.OldestReaderAge)

	require.NoError(t, db.Close())
	_, err = snap.Get([]byte("k1"))
	require.ErrorIs(t, err, heapkv.ErrClosed)
	_, err = snap.NewIter(nil)
	require.ErrorIs(t, err, heapkv.ErrClosed)
	for _, it := range []*heapkv.Iterator{it, sit, tit} {
		require.False(t, it.Next())
		require.False(t, it.First())
		require.Nil(t, it.Key())
		require.ErrorIs(t, it.Error(), heapkv.ErrClosed)
		require.NoError(t, it.Close())
		require.ErrorIs(t, it.Close(), heapkv.ErrIterClosed)
	}
	require.ErrorIs(t, txn.Commit(), heapkv.ErrClosed)
	require.NoError(t, txn.Rollback())
	require.NoError(t, snap.Close())
	_, err = db.Begin(true)
	require.ErrorIs(t, err, heapkv.ErrClosed)
	_, err = db.NewSnapshot()
	require.ErrorIs(t, err, heapkv.ErrClosed)
	_, err = db.NewIter(nil)
	require.ErrorIs(t, err, heapkv.ErrClosed)
	require.ErrorIs(t, db.View(func(*heapkv.Txn) error { return nil }), heapkv.ErrClosed)
}

// TestTxnTrackerBound: when more keys are written than the conflict
// tracker keeps while a transaction is open, the oldest history is dropped
// and that transaction fails with ErrConflict rather than commit unchecked;
// transactions that began after the dropped history are unaffected.
func TestTxnTrackerBound(t *testing.T) {
	defer heapkv.SetMaxTrackedKeys(100)()
	db := openTxnDB(t)
	old, err := db.Begin(true)
	require.NoError(t, err)
	require.NoError(t, old.Put([]byte("mine"), []byte("1")))
	for i := range 150 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "other-%03d", i), nil))
	}
	st, err := db.Stats()
	require.NoError(t, err)
	require.LessOrEqual(t, st.TxnTrackedKeys, int64(100))
	young, err := db.Begin(true)
	require.NoError(t, err)
	require.NoError(t, young.Put([]byte("yours"), []byte("1")))
	err = old.Commit()
	require.ErrorIs(t, err, heapkv.ErrConflict)
	require.Contains(t, err.Error(), "history")
	require.NoError(t, young.Commit())
}

func TestSnapshotScan(t *testing.T) {
	db := openTxnDB(t)
	for i := range 20 {
		require.NoError(t, db.Put(fmt.Appendf(nil, "s%02d", i), val("v", i*20)))
	}
	snap, err := db.NewSnapshot()
	require.NoError(t, err)
	defer snap.Close()
	require.NoError(t, db.Delete([]byte("s05")))
	require.NoError(t, db.Put([]byte("s99"), nil))
	var serr error
	var keys []string
	for k, v := range snap.Scan([]byte("s"), &serr) {
		require.Equal(t, val("v", len(keys)*20), v)
		keys = append(keys, string(k))
	}
	require.NoError(t, serr)
	require.Len(t, keys, 20)
	require.Equal(t, "s05", keys[5])
}
