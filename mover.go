package heapkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/pace"
)

// Moving heap values in key order: the first step of Compact (compact.go)
// and all of its clustering (cluster.go). A mover walks the index, collects
// the keys whose values are to move, and rewrites them a batch at a time,
// each batch in one transaction that loses to any concurrent write of its
// keys (moveKeys), so nothing a writer did is undone.

// compactBatchBytes and compactBatchKeys bound one moving transaction.
const (
	compactBatchBytes = 4 << 20
	compactBatchKeys  = 512
)

// compactIterBytes is how many bytes a mover moves with one index
// iterator (a variable for tests).
var compactIterBytes int64 = compactGroupBytes

// mover moves heap values in key order (run): what to move and how, and
// the batch of keys collected for the next transaction.
type mover struct {
	db     *DB
	in     func([]alloc.Extent) bool // whether a value's extents are to move
	lo, hi []byte                    // the keys to walk, [lo, hi); nil: no bound
	fresh  bool                      // rewritten values go to empty segments, in key order (Txn.fresh)
	pacer  *pace.Pacer
	after  func(moved int64) error // if not nil, called with the bytes moved after each transaction
	res    *CompactResult

	keys  [][]byte
	bytes int64 // the batch's value bytes
}

// run rewrites, in key order, every heap value of a key in [m.lo, m.hi)
// whose extents m.in says to move, in transactions of at most
// compactBatchKeys keys and compactBatchBytes bytes.
//
// The index iterator is opened again, just after the last key moved, every
// compactIterBytes moved: an open iterator keeps the tables and memtables
// it reads from being released, and a clustering moves the whole heap.
func (m *mover) run(ctx context.Context) error {
	var from []byte // resume after this key; nil: from m.lo
	for {
		o := &pebble.IterOptions{LowerBound: m.lo, UpperBound: m.hi}
		if from != nil {
			o.LowerBound = append(from, 0)
		}
		it, err := m.db.index.NewIterWithContext(ctx, o)
		if err != nil {
			return indexError("compact: new iterator", err)
		}
		from, err = m.walk(ctx, it, m.res.BytesMoved+compactIterBytes)
		if cerr := it.Close(); err == nil && cerr != nil {
			err = indexError("compact: close iterator", cerr)
		}
		if err != nil || from == nil {
			return err
		}
	}
}

// walk collects, from it, the keys whose values m.in says to move, and
// moves them a batch at a time, until the index ends (it moves the rest and
// returns a nil key) or a batch has brought the bytes moved to renewAt (it
// returns the last key moved; the batch is then empty).
func (m *mover) walk(ctx context.Context, it *pebble.Iterator, renewAt int64) ([]byte, error) {
	for valid := it.First(); valid; valid = it.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return nil, indexError(fmt.Sprintf("compact: value of %q", it.Key()), err)
		}
		e, err := m.db.decodeEntry(it.Key(), raw)
		if err != nil {
			return nil, err
		}
		if !e.isHeap || !m.in(e.ptr.extents) {
			continue
		}
		m.keys = append(m.keys, slices.Clone(it.Key()))
		m.bytes += int64(e.ptr.rawLen)
		if len(m.keys) < compactBatchKeys && m.bytes < compactBatchBytes {
			continue
		}
		if err := m.flush(ctx); err != nil {
			return nil, err
		}
		if m.res.BytesMoved >= renewAt {
			return slices.Clone(it.Key()), nil
		}
	}
	if err := it.Error(); err != nil {
		return nil, indexError("compact: iterate", err)
	}
	return nil, m.flush(ctx)
}

// flush moves the batch's keys in one transaction (moveKeys), paced.
func (m *mover) flush(ctx context.Context) error {
	if len(m.keys) == 0 {
		return nil
	}
	if err := m.pacer.Wait(ctx, m.bytes); err != nil {
		return err
	}
	if err := m.db.moveKeys(m.keys, m.in, m.fresh, m.res); err != nil {
		return err
	}
	m.keys, m.bytes = m.keys[:0], 0
	if m.after != nil {
		return m.after(m.res.BytesMoved)
	}
	return nil
}

// moveKeys rewrites, in one transaction, the values of keys whose entries
// still point into the held segments. The transaction begins before any
// entry is read, so a key written since makes Commit fail with
// ErrConflict; the batch is then tried again with fresh entries (the
// changed key's new value lies elsewhere and is skipped), and split in
// halves when it keeps conflicting with busy writers.
// REQUIRES: keys in ascending order (moveOnce).
func (db *DB) moveKeys(keys [][]byte, in func([]alloc.Extent) bool, fresh bool, res *CompactResult) error {
	const tries = 3
	for try := 0; ; try++ {
		err := db.moveOnce(keys, in, fresh, res)
		if !errors.Is(err, ErrConflict) {
			return err
		}
		res.Conflicts++
		if try < tries {
			continue
		}
		if len(keys) == 1 {
			return nil // written on every try: each write moved it already
		}
		h := len(keys) / 2
		if err := db.moveKeys(keys[:h], in, fresh, res); err != nil {
			return err
		}
		return db.moveKeys(keys[h:], in, fresh, res)
	}
}

// moveOnce is one try of moveKeys. It reads the keys' entries as of the
// transaction's snapshot with one index iterator (Pebble steps forward
// instead of seeking anew when the next key is near), and hands the
// commit each entry it read as the state the move replaces
// (Txn.commitMoves): a point lookup a key, here and again in the commit's
// prefetchPrior, took 29% of the samples of a clustering (BENCHMARKS.md,
// "Clustering without lookups").
// REQUIRES: keys in ascending order (as mover.walk collects them).
func (db *DB) moveOnce(keys [][]byte, in func([]alloc.Extent) bool, fresh bool, res *CompactResult) error {
	txn, err := db.BeginTxn(&TxnOptions{WriteOptions: &WriteOptions{Sync: false}})
	if err != nil {
		return err
	}
	defer txn.Rollback()
	txn.fresh = fresh
	it, closeIt, err := txn.indexIter(&pebble.IterOptions{
		LowerBound: keys[0], UpperBound: append(slices.Clone(keys[len(keys)-1]), 0)})
	if err != nil {
		return err
	}
	defer closeIt()
	ops := make([]batchOp, 0, len(keys))
	priors := make([]keyState, 0, len(keys)) // never grown: the ops point into it
	var moved int64
	for _, k := range keys {
		if !it.SeekGE(k) || !bytes.Equal(it.Key(), k) {
			if err := it.Error(); err != nil {
				return indexError(fmt.Sprintf("compact: seek %q", k), err)
			}
			continue // deleted since the walk
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return indexError(fmt.Sprintf("compact: value of %q", k), err)
		}
		e, err := db.decodeEntry(k, raw)
		if err != nil {
			return fmt.Errorf("move %q: %w", k, err)
		}
		if !e.isHeap || !in(e.ptr.extents) {
			continue
		}
		if err := db.checkAllocated(k, e.ptr.extents); err != nil {
			return fmt.Errorf("move %q: %w", k, err)
		}
		value, err := db.heapValue(k, &e.ptr)
		if err != nil {
			return fmt.Errorf("move %q: %w", k, err)
		}
		priors = append(priors, e.state())
		ops = append(ops, batchOp{kind: opPut, key: k, value: value, prior: &priors[len(priors)-1]})
		moved += int64(len(value))
	}
	if err := txn.commitMoves(ops); err != nil {
		return err
	}
	res.ValuesMoved += int64(len(ops))
	res.BytesMoved += moved
	return nil
}
