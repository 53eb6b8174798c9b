package heapkv

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/internal/base"
)

// Optimistic transactions. A Txn reads at the snapshot it took when it
// began and buffers its writes; its own writes are visible to its own reads
// and iterators. Commit sends the writes as one group-commit request (one
// log record: all or nothing after a crash) whose check hook asks the
// conflict tracker (conflict.go) whether a commit after the snapshot
// touched what the transaction wrote (snapshot isolation) or read
// (TxnOptions.Serializable); if so Commit fails with ErrConflict and
// nothing is written.

// TxnOptions configure a transaction. A nil *TxnOptions means a read-write
// transaction with snapshot isolation and the database's default
// durability.
type TxnOptions struct {
	// ReadOnly makes Put and Delete fail with ErrReadOnlyTxn. A read-only
	// transaction never conflicts and costs no conflict tracking.
	ReadOnly bool

	// Serializable also fails Commit with ErrConflict when a key the
	// transaction read (with Get, found or not) or a key inside a range one
	// of its iterators walked was written by a commit after it began. The
	// committed transactions are then serializable in commit order. By
	// default (snapshot isolation) only write-write conflicts are detected,
	// which admits write skew.
	Serializable bool

	// WriteOptions set the durability of Commit; nil means the database's
	// default (Options.NoSync).
	WriteOptions *WriteOptions
}

// Txn is an optimistic transaction. It sees the database as of Begin plus
// its own writes. Call Commit or Rollback to end it; Rollback after Commit
// does nothing, so `defer txn.Rollback()` is always safe. A Txn is not safe
// for concurrent use (except that DB.Close may close it concurrently; its
// methods then return ErrClosed).
//
// An open transaction pins its snapshot like a Snapshot does: heap blocks
// freed after it began are not reused until it ends.
type Txn struct {
	db           *DB
	readOnly     bool
	serializable bool
	sync         bool
	// fresh places the transaction's heap values in empty segments, in key
	// order (alloc.AllocateFresh): Compact's clustering moves (cluster.go).
	fresh bool

	// mu protects the following (and serialises with DB.Close).
	mu         sync.Mutex
	snap       *snapRef
	start      base.LSN // LSN the snapshot sees at least; conflicts are commits after it
	registered bool     // with the conflict tracker (read-write transactions)
	reg        *readerEntry
	done       error // nil while open; ErrTxnClosed or ErrClosed after
	writes     map[string]*txnWrite
	sorted     []*txnWrite // writes by key; nil when stale
	nbytes     int64
	reads      map[uint64]struct{} // fingerprints of keys read (serializable)
	hulls      []*readHull         // ranges read by iterators (serializable)
	iters      map[*Iterator]struct{}
}

// txnWrite is one buffered write. It is replaced, never changed, when the
// key is written again, so iterators keep the view they were made with.
type txnWrite struct {
	key   []byte
	value []byte
	del   bool
}

// Begin starts a transaction with snapshot isolation: read-write if update,
// else read-only. See BeginTxn.
func (db *DB) Begin(update bool) (*Txn, error) {
	return db.BeginTxn(&TxnOptions{ReadOnly: !update})
}

// BeginTxn starts a transaction; nil opts means read-write with snapshot
// isolation. It fails with ErrClosed after Close.
func (db *DB) BeginTxn(opts *TxnOptions) (*Txn, error) {
	var o TxnOptions
	if opts != nil {
		o = *opts
	}
	if !o.ReadOnly {
		if err := db.errIfReadOnly("read-write transaction on"); err != nil {
			return nil, err
		}
	}
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.leave()
	t := &Txn{db: db, readOnly: o.ReadOnly, serializable: o.Serializable && !o.ReadOnly, sync: db.syncFor(o.WriteOptions)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if o.ReadOnly {
		t.start = db.applied.Load()
	} else {
		t.start = db.registerTxn()
		t.registered = true
	}
	reg, err := db.addReader(kindTxn, t.start, func() { t.end(ErrClosed) })
	if err != nil {
		if t.registered {
			db.unregisterTxn(t.start)
		}
		return nil, err
	}
	t.reg = reg
	t.snap = db.newSnapRef(t.start)
	return t, nil
}

// Update runs fn in a read-write transaction with snapshot isolation and
// commits it if fn returns nil; otherwise (or if fn panics) it rolls back
// and returns fn's error. It does not retry: on ErrConflict the caller may
// run it again. fn must not call Commit or Rollback.
func (db *DB) Update(fn func(txn *Txn) error) error {
	return db.UpdateTxn(nil, fn)
}

// UpdateTxn is Update with options (for instance Serializable).
func (db *DB) UpdateTxn(opts *TxnOptions, fn func(txn *Txn) error) error {
	t, err := db.BeginTxn(opts)
	if err != nil {
		return err
	}
	defer t.Rollback()
	if err := fn(t); err != nil {
		return err
	}
	return t.Commit()
}

// View runs fn in a read-only transaction: every read sees the database as
// of the call. It returns fn's error.
func (db *DB) View(fn func(txn *Txn) error) error {
	t, err := db.BeginTxn(&TxnOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer t.Rollback()
	return fn(t)
}

// Get returns a copy of the value of key as the transaction sees it (its
// own writes first, then its snapshot), or an error wrapping ErrNotFound.
func (t *Txn) Get(key []byte) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done != nil {
		return nil, t.done
	}
	if w, ok := t.writes[string(key)]; ok {
		if w.del {
			return nil, ErrNotFound
		}
		return append([]byte{}, w.value...), nil
	}
	if t.serializable {
		if t.reads == nil {
			t.reads = make(map[uint64]struct{})
		}
		t.reads[t.db.conflicts.hash(key)] = struct{}{}
	}
	return t.snap.get(key)
}

// Put buffers a write of value under key (both copied).
func (t *Txn) Put(key, value []byte) error {
	if err := checkPut(key, value); err != nil {
		return err
	}
	return t.set(key, value, false)
}

// Delete buffers a deletion of key. Deleting a missing key is not an error.
func (t *Txn) Delete(key []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return t.set(key, nil, true)
}

func (t *Txn) set(key, value []byte, del bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.done != nil:
		return t.done
	case t.readOnly:
		return ErrReadOnlyTxn
	}
	old, ok := t.writes[string(key)]
	n, ops := t.nbytes+int64(len(key)+len(value)), len(t.writes)
	if ok {
		n -= int64(len(old.key) + len(old.value))
	} else {
		ops++
	}
	if ops > MaxTxnOps || n > MaxTxnBytes {
		return fmt.Errorf("%w: %d keys, %d bytes (limits %d keys, %d bytes)", ErrTxnTooLarge, ops, n, MaxTxnOps, MaxTxnBytes)
	}
	if t.writes == nil {
		t.writes = make(map[string]*txnWrite)
	}
	w := &txnWrite{key: bytes.Clone(key), value: append([]byte{}, value...), del: del}
	t.writes[string(w.key)] = w
	t.nbytes = n
	t.sorted = nil
	return nil
}

// NewIter returns an iterator over the transaction's view: its snapshot
// merged with its own writes as of this call. nil opts means every key.
// The iterator is closed when the transaction ends. In a serializable
// transaction the keys the iterator walks over, and the gaps between them,
// count as read.
func (t *Txn) NewIter(opts *IterOptions) (*Iterator, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done != nil {
		return nil, t.done
	}
	it, err := t.db.newIter(opts, t.snap, t)
	if err != nil {
		return nil, err
	}
	if t.iters == nil {
		t.iters = make(map[*Iterator]struct{})
	}
	t.iters[it] = struct{}{}
	return it, nil
}

// Scan returns the keys with the given prefix and their values as the
// transaction sees them, in key order; see DB.Scan.
func (t *Txn) Scan(prefix []byte, errp *error) iter.Seq2[[]byte, []byte] {
	mustErrp(errp)
	return scanSeq(func() (*Iterator, error) { return t.NewIter(&IterOptions{Prefix: prefix}) }, errp)
}

// forgetIter drops a closed iterator from the open set.
func (t *Txn) forgetIter(it *Iterator) {
	t.mu.Lock()
	delete(t.iters, it)
	t.mu.Unlock()
}

// sortedWrites returns the buffered writes in [lo, hi) in key order. The
// slice is not changed afterwards. REQUIRES: t.mu held.
func (t *Txn) sortedWrites(lo, hi []byte) []*txnWrite {
	if len(t.writes) == 0 {
		return nil
	}
	if t.sorted == nil {
		s := make([]*txnWrite, 0, len(t.writes))
		for _, w := range t.writes {
			s = append(s, w)
		}
		slices.SortFunc(s, func(a, b *txnWrite) int { return bytes.Compare(a.key, b.key) })
		t.sorted = s
	}
	s := t.sorted
	i, _ := slices.BinarySearchFunc(s, lo, func(w *txnWrite, k []byte) int { return bytes.Compare(w.key, k) })
	j := len(s)
	if hi != nil {
		j, _ = slices.BinarySearchFunc(s, hi, func(w *txnWrite, k []byte) int { return bytes.Compare(w.key, k) })
	}
	if i >= j {
		return nil
	}
	return s[i:j:j]
}

// Commit writes the transaction's writes atomically, as one log record, if
// no conflicting commit happened since it began; otherwise it returns
// ErrConflict and writes nothing. Either way the transaction ends. A
// transaction without writes commits without touching the log. Commit
// after the end returns ErrTxnClosed.
func (t *Txn) Commit() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done != nil {
		return t.done
	}
	defer t.endLocked(ErrTxnClosed)
	if len(t.writes) == 0 {
		return nil
	}
	ws := t.sortedWrites(nil, nil)
	ops := make([]batchOp, len(ws))
	c := &txnCheck{start: t.start, writes: make([][]byte, len(ws))}
	for i, w := range ws {
		ops[i] = batchOp{kind: opPut, key: w.key, value: w.value}
		if w.del {
			ops[i] = batchOp{kind: opDelete, key: w.key}
		}
		c.writes[i] = w.key
	}
	if t.serializable {
		c.reads = make([]uint64, 0, len(t.reads))
		for h := range t.reads {
			c.reads = append(c.reads, h)
		}
		for _, h := range t.hulls {
			if r, ok := h.keyRange(); ok {
				c.ranges = append(c.ranges, r)
			}
		}
	}
	return t.commitOps(ops, c)
}

// commitOps applies ops if c's conflict check passes, and counts the
// outcome. REQUIRES: t.mu held; t open.
func (t *Txn) commitOps(ops []batchOp, c *txnCheck) error {
	db := t.db
	err := db.apply(ops, t.sync, t.fresh, func(lsn base.LSN) error { return db.checkTxn(c, lsn) })
	switch {
	case err == nil:
		db.stats.txnCommits.Add(1)
	case errors.Is(err, ErrConflict):
		db.stats.txnConflicts.Add(1)
	}
	return err
}

// commitMoves commits ops, Compact's moves, and ends the transaction, as
// Commit would had each op been Put: they are puts of values read in the
// transaction's snapshot, each with the state its key held there
// (batchOp.prior), so the commit looks nothing up. That state is still the
// key's when the commit takes its LSN, since a commit after the snapshot
// that wrote the key fails this one with ErrConflict (checkTxn runs before
// the leader reads the priors: admit). The ops are not buffered: no
// iterator of the transaction sees them.
// REQUIRES: no writes buffered; ops puts of distinct keys.
func (t *Txn) commitMoves(ops []batchOp) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done != nil {
		return t.done
	}
	defer t.endLocked(ErrTxnClosed)
	if len(ops) == 0 {
		return nil
	}
	c := &txnCheck{start: t.start, writes: make([][]byte, len(ops))}
	for i := range ops {
		c.writes[i] = ops[i].key
	}
	return t.commitOps(ops, c)
}

// indexIter returns an iterator over the index as the transaction's
// snapshot holds it (not merged with its writes) and the func that closes
// it. The snapshot, and its pin on the heap blocks it sees, stays until
// then, even if Close ends the transaction meanwhile.
func (t *Txn) indexIter(o *pebble.IterOptions) (*pebble.Iterator, func(), error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done != nil {
		return nil, nil, t.done
	}
	snap := t.snap
	it, err := snap.psnap.NewIter(o)
	if err != nil {
		return nil, nil, indexError("transaction: new iterator", err)
	}
	snap.ref()
	return it, func() {
		_ = it.Close() // an error surfaced at the seek or read that met it
		snap.unref()
	}, nil
}

// Rollback ends the transaction, discarding its writes. It is a no-op on a
// transaction that already ended, and always returns nil.
func (t *Txn) Rollback() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done == nil {
		t.endLocked(ErrTxnClosed)
	}
	return nil
}

// end is the forced end (DB.Close).
func (t *Txn) end(why error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done == nil {
		t.endLocked(why)
	}
}

// endLocked closes the transaction's iterators, drops its snapshot and its
// registration. REQUIRES: t.mu held; t.done == nil.
func (t *Txn) endLocked(why error) {
	t.done = why
	for it := range t.iters {
		it.close(why)
	}
	t.snap.unref()
	if t.registered {
		t.db.unregisterTxn(t.start)
	}
	t.db.removeReader(t.reg)
	t.writes, t.sorted, t.reads, t.hulls, t.iters = nil, nil, nil, nil, nil
}
