package heapkv

import (
	"bytes"
	"fmt"
	"iter"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
)

// IterOptions restrict an iterator to a key range. A nil *IterOptions means
// every key. The iterator copies the bounds, so the caller may reuse them.
type IterOptions struct {
	// LowerBound is the smallest key the iterator returns (inclusive);
	// nil means no lower bound.
	LowerBound []byte
	// UpperBound is the key the iterator stops before (exclusive); nil
	// means no upper bound.
	UpperBound []byte
	// Prefix, if not empty, restricts the iterator to keys that start with
	// it, within the bounds.
	Prefix []byte
}

// bounds returns the effective [lo, hi) of o (nil: unbounded).
func (o *IterOptions) bounds() (lo, hi []byte) {
	if o == nil {
		return nil, nil
	}
	lo, hi = cloneBytes(o.LowerBound), cloneBytes(o.UpperBound)
	if len(o.Prefix) > 0 {
		if lo == nil || bytes.Compare(o.Prefix, lo) > 0 {
			lo = cloneBytes(o.Prefix)
		}
		if ps := prefixSuccessor(o.Prefix); ps != nil && (hi == nil || bytes.Compare(ps, hi) < 0) {
			hi = ps
		}
	}
	if lo != nil && hi != nil && bytes.Compare(lo, hi) > 0 {
		hi = lo // empty range
	}
	return lo, hi
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// prefixSuccessor returns the smallest key greater than every key with the
// given prefix, or nil if there is none (the prefix is all 0xff).
func prefixSuccessor(p []byte) []byte {
	s := cloneBytes(p)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	return nil
}

// Iterator walks keys in order over a consistent view: the database as of
// NewIter, a Snapshot, or a transaction (whose own writes, as of NewIter,
// it merges in). Position it with First, Last, SeekGE or SeekLT, then move
// with Next and Prev; each returns whether the iterator is at a key.
// Next on an iterator that ran off the front (a Prev, SeekLT or Last that
// returned false) moves to the first key, and Prev after running off the
// end moves to the last; on an unpositioned iterator both return false.
//
// Key and Value return slices that are valid only until the next move or
// Close, and must not be modified: copy them to keep them. Value reads a heap value when it is first
// asked for (keys-only walks never touch the heap) and verifies its CRC.
// The first error met (a corrupt value, an index read error) is kept for
// Error and returned by Close.
//
// An open iterator holds back the reuse of heap blocks freed after it was
// made, so close it when done. DB.Close closes iterators still open; their
// methods then return false or ErrClosed. A transaction's iterators are
// closed when the transaction ends. An Iterator is not safe for concurrent
// use (but Close of the DB or the transaction may run concurrently).
type Iterator struct {
	db *DB
	// mu serialises methods with a forced close (DB.Close, Txn end).
	mu     sync.Mutex
	pit    *pebble.Iterator
	snap   *snapRef // nil for a DB iterator, which pins tok itself
	tok    pinToken
	reg    *readerEntry
	txn    *Txn
	lo, hi []byte
	done   error // nil while open; ErrIterClosed, ErrTxnClosed or ErrClosed after
	err    error // first error

	valid bool
	dir   int8 // +1 forward, -1 backward, 0 unpositioned

	// Merging with a transaction's buffered writes (when buf is not empty).
	buf    []*txnWrite // sorted by key, inside [lo, hi); deletes included
	bi     int         // position in buf
	pv     bool        // pit is at a key
	inBuf  bool        // the current key comes from buf[bi]
	shadow bool        // ... and pit is at the same key
	kcopy  []byte      // scratch copy of the current key for reseeks

	val    []byte // cached value of the current key
	valSet bool
	viewed bool // ViewValue read the current key's value in the heap's map

	rr *readHull // serializable transaction: what this iterator observed

	// Readahead (iterator_readahead.go): streak counts Next calls in a row
	// that followed a Value read.
	streak int
	ra     readahead
	ah     ahead          // the Pebble iterator's walk ahead of a scan (iterator_ahead.go)
	vbuf   *[]byte        // value buffer of reads from the heap's map (iterValueBufs)
	exts   []alloc.Extent // extent buffer of the current value's pointer, reused
}

// NewIter returns an iterator over the current state of the database; nil
// opts means every key. It fails with ErrClosed after Close.
func (db *DB) NewIter(opts *IterOptions) (*Iterator, error) {
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.leave()
	return db.newIter(opts, nil, nil)
}

// Scan returns the keys with the given prefix (every key for an empty
// prefix) and their values, in key order, as of the start of the loop:
//
//	var err error
//	for k, v := range db.Scan(prefix, &err) {
//		...
//	}
//	if err != nil { ... }
//
// k and v are valid only in the loop body they are passed to: copy them to
// keep them. The first error (a corrupt value, an index read error, a
// closed database) ends the loop and is stored in *errp, which each loop
// first sets to nil. errp must not be nil (Scan panics: a dropped error
// would pass a partial scan off as complete).
func (db *DB) Scan(prefix []byte, errp *error) iter.Seq2[[]byte, []byte] {
	mustErrp(errp)
	return scanSeq(func() (*Iterator, error) { return db.NewIter(&IterOptions{Prefix: prefix}) }, errp)
}

func mustErrp(errp *error) {
	if errp == nil {
		panic("heapkv: Scan needs a non-nil error pointer")
	}
}

// scanSeq ranges over the iterator open returns, from its first key.
func scanSeq(open func() (*Iterator, error), errp *error) iter.Seq2[[]byte, []byte] {
	return func(yield func(k, v []byte) bool) {
		*errp = nil
		it, err := open()
		if err != nil {
			*errp = err
			return
		}
		defer func() {
			if err := it.Close(); *errp == nil {
				*errp = err
			}
		}()
		for ok := it.First(); ok; ok = it.Next() {
			k, v, err := it.KeyValue()
			if err != nil {
				*errp = err
				return
			}
			if !yield(k, v) {
				return
			}
		}
	}
}

// newIter makes an iterator over snap (nil: the current state, pinned here)
// merging txn's writes (nil: none).
// REQUIRES: db.enter held, or snap held open by its owner's lock.
func (db *DB) newIter(opts *IterOptions, snap *snapRef, txn *Txn) (*Iterator, error) {
	it := &Iterator{db: db, snap: snap, txn: txn}
	it.lo, it.hi = opts.bounds()
	it.mu.Lock()
	defer it.mu.Unlock()
	lsn := db.applied.Load()
	if snap != nil {
		lsn = snap.lsn
	}
	reg, err := db.addReader(kindIterator, lsn, func() { it.close(ErrClosed) })
	if err != nil {
		return nil, err
	}
	it.reg = reg
	popts := &pebble.IterOptions{LowerBound: it.lo, UpperBound: it.hi}
	if snap != nil {
		snap.ref()
		it.pit, err = snap.psnap.NewIter(popts)
	} else {
		it.tok = db.pins.pin(lsn)
		it.pit, err = db.index.NewIter(popts)
	}
	if err != nil {
		it.release()
		return nil, fmt.Errorf("heapkv: new iterator: %w", err)
	}
	if txn != nil {
		it.buf = txn.sortedWrites(it.lo, it.hi)
		if txn.serializable {
			it.rr = &readHull{}
			txn.hulls = append(txn.hulls, it.rr)
		}
	}
	return it, nil
}

// release frees what the iterator holds; REQUIRES: it.mu held.
func (it *Iterator) release() {
	if it.pit != nil {
		if err := it.pit.Close(); err != nil && it.err == nil {
			it.err = indexError("close iterator", err)
		}
		it.pit = nil
	}
	if it.snap != nil {
		it.snap.unref()
	} else {
		it.db.pins.unpin(it.tok)
	}
	it.ra.close()
	putValueBuf(it.vbuf)
	it.db.removeReader(it.reg)
	it.valid, it.val, it.buf, it.vbuf = false, nil, nil, nil
}

// close is the forced close (DB.Close, end of the transaction).
func (it *Iterator) close(why error) {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.done == nil {
		it.done = why
		it.release()
	}
}

// Close releases the iterator and returns its first error, if any. Closing
// twice returns ErrIterClosed; Close after the DB or the transaction closed
// the iterator returns nil.
func (it *Iterator) Close() error {
	it.mu.Lock()
	switch it.done {
	case nil:
	case ErrIterClosed:
		it.mu.Unlock()
		return ErrIterClosed
	default: // closed by the DB or the transaction
		it.done = ErrIterClosed
		it.mu.Unlock()
		return nil
	}
	it.done = ErrIterClosed
	it.release()
	err := it.err
	it.mu.Unlock()
	if it.txn != nil {
		it.txn.forgetIter(it)
	}
	return err
}

// Error returns the first error the iterator met, or after Close the
// reason it is closed.
func (it *Iterator) Error() error {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.err != nil {
		return it.err
	}
	return it.done
}

// Valid reports whether the iterator is at a key.
func (it *Iterator) Valid() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.valid
}

// Key returns the current key, or nil when the iterator is not at a key.
// The slice is valid until the next move.
func (it *Iterator) Key() []byte {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.keyLocked()
}

func (it *Iterator) keyLocked() []byte {
	switch {
	case !it.valid:
		return nil
	case it.inBuf:
		return it.buf[it.bi].key
	case it.ah.on:
		return it.ah.slots[it.ah.cur].key
	default:
		return it.pit.Key()
	}
}

// Value returns the current value, reading it from the heap if it lives
// there; nil, nil when the iterator is not at a key. The slice is valid
// until the next move. An error is also kept for Error.
func (it *Iterator) Value() ([]byte, error) {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.valueLocked()
}

// KeyValue returns Key and Value with one call.
func (it *Iterator) KeyValue() (key, value []byte, err error) {
	it.mu.Lock()
	defer it.mu.Unlock()
	v, err := it.valueLocked()
	return it.keyLocked(), v, err
}

// heapLSN reports whether the current key's value lives in the heap, and
// the LSN of the write that stored it, without reading it (incremental
// exports: increment.go). A key from a transaction's buffered writes has
// no entry yet: heap is false.
func (it *Iterator) heapLSN() (heap bool, lsn base.LSN, err error) {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.done != nil {
		return false, 0, it.done
	}
	if !it.valid || it.inBuf {
		return false, 0, nil
	}
	var e entry
	if err := it.entryLocked(&e); err != nil {
		return false, 0, err
	}
	return e.isHeap, e.ptr.lsn, nil
}

// entryLocked decodes the index entry at the current key (which comes
// from the index, not a transaction's buffer) into e; an error is kept
// for Error. A heap entry's extents are in it.exts, reused at the next
// call. REQUIRES: it.mu held.
func (it *Iterator) entryLocked(e *entry) error {
	var err error
	if it.ah.on {
		err = it.aheadEntryTo(e)
	} else {
		key := it.pit.Key()
		raw, rerr := it.pit.ValueAndErr()
		if rerr != nil {
			return it.setErr(indexError(fmt.Sprintf("iterator: value of %q", key), rerr))
		}
		err = it.db.decodeEntryTo(e, key, raw, it.exts)
	}
	if e.isHeap {
		it.exts = e.ptr.extents[:0]
		if err == nil {
			it.ah.note(&e.ptr)
		}
	}
	if err != nil {
		return it.setErr(err)
	}
	return nil
}

func (it *Iterator) valueLocked() ([]byte, error) {
	if it.done != nil {
		return nil, it.done
	}
	if !it.valid {
		return nil, nil
	}
	if it.valSet {
		return it.val, nil
	}
	if it.inBuf {
		it.val, it.valSet = it.buf[it.bi].value, true
		return it.val, nil
	}
	var e entry
	if err := it.entryLocked(&e); err != nil {
		return nil, err
	}
	return it.valueOf(&e)
}

// valueOf returns the value of e, the entry at the current key, and keeps
// it as the current value. Inline values alias the index's memory; heap
// values are read from the heap (not through the value cache, so that a
// scan does not push hot values out of it): out of its map into a reused
// buffer, or with readahead during forward scans (iterator_readahead.go).
// REQUIRES: it.mu held.
func (it *Iterator) valueOf(e *entry) ([]byte, error) {
	v := e.inline
	if e.isHeap {
		var err error
		if v, err = it.heapValueAhead(it.keyLocked(), &e.ptr); err != nil {
			return nil, it.setErr(err)
		}
	}
	it.val, it.valSet = v, true
	return v, nil
}

func (it *Iterator) setErr(err error) error {
	if it.err == nil {
		it.err = err
	}
	return err
}

// First moves to the first key and reports whether there is one.
func (it *Iterator) First() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.firstLocked()
}

func (it *Iterator) firstLocked() bool {
	if !it.begin(1) {
		return false
	}
	it.pv = it.pit.First()
	it.bi = 0
	it.settle()
	it.observe(it.lo, true)
	return it.valid
}

// Last moves to the last key and reports whether there is one.
func (it *Iterator) Last() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.lastLocked()
}

func (it *Iterator) lastLocked() bool {
	if !it.begin(-1) {
		return false
	}
	it.pv = it.pit.Last()
	it.bi = len(it.buf) - 1
	it.settle()
	it.observe(it.hi, true)
	return it.valid
}

// SeekGE moves to the first key at or after key.
func (it *Iterator) SeekGE(key []byte) bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	if !it.begin(1) {
		return false
	}
	if it.lo != nil && bytes.Compare(key, it.lo) < 0 {
		key = it.lo
	}
	it.pv = it.pit.SeekGE(key)
	it.bi = sort.Search(len(it.buf), func(i int) bool { return bytes.Compare(it.buf[i].key, key) >= 0 })
	it.settle()
	it.observe(key, true)
	return it.valid
}

// SeekLT moves to the last key before key.
func (it *Iterator) SeekLT(key []byte) bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	if !it.begin(-1) {
		return false
	}
	if it.hi != nil && bytes.Compare(key, it.hi) > 0 {
		key = it.hi
	}
	it.pv = it.pit.SeekLT(key)
	it.bi = sort.Search(len(it.buf), func(i int) bool { return bytes.Compare(it.buf[i].key, key) >= 0 }) - 1
	it.settle()
	it.observe(key, true)
	return it.valid
}

// Next moves to the next key.
func (it *Iterator) Next() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.done != nil {
		return false
	}
	if !it.valid {
		if it.dir == -1 {
			return it.firstLocked()
		}
		return false
	}
	if it.dir == -1 {
		return it.reverse(1)
	}
	if it.valSet || it.viewed {
		it.streak++
	} else {
		it.streak = 0
	}
	it.beginMove()
	if it.ah.on {
		return it.nextAhead()
	}
	prev := it.rememberKey()
	if !it.inBuf || it.shadow {
		it.pv = it.pit.Next()
	}
	if it.inBuf {
		it.bi++
	}
	it.settle()
	it.observe(prev, false)
	if it.valid && it.ah.jumps >= aheadJumps && !it.inBuf {
		it.startAhead()
	}
	return it.valid
}

// Prev moves to the previous key.
func (it *Iterator) Prev() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.done != nil {
		return false
	}
	if !it.valid {
		if it.dir == 1 {
			return it.lastLocked()
		}
		return false
	}
	if it.dir == 1 {
		return it.reverse(-1)
	}
	it.endScan()
	it.beginMove()
	prev := it.rememberKey()
	if !it.inBuf || it.shadow {
		it.pv = it.pit.Prev()
	}
	if it.inBuf {
		it.bi--
	}
	it.settle()
	it.observe(prev, false)
	return it.valid
}

// begin starts an absolute positioning in direction dir.
func (it *Iterator) begin(dir int8) bool {
	if it.done != nil {
		return false
	}
	it.endScan()
	it.beginMove()
	it.dir = dir
	return true
}

// endScan ends a forward scan's readahead: the iterator jumped.
func (it *Iterator) endScan() {
	if it.ah.on {
		it.stopAhead()
	}
	if it.streak > 0 || it.ra.la != nil {
		it.streak = 0
		it.ra.drop()
	}
}

func (it *Iterator) beginMove() {
	it.val, it.valSet, it.viewed = nil, false, false
}
