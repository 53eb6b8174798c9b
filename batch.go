package heapkv

import "fmt"

// Batch collects writes that Apply commits atomically, as one log record:
// after a crash either all of them are present or none. A Batch copies the
// keys and values it is given, so callers may reuse their buffers. The zero
// Batch is ready to use. A Batch is not safe for concurrent use.
type Batch struct {
	ops   []batchOp
	arena []byte
	err   error // first invalid op; reported by Apply
}

// batchOp is one write of a batch: a Batch's, a transaction's or a
// single Put's or Delete's.
type batchOp struct {
	kind       byte
	key, value []byte // a Batch's: slices of its arena
	// prior, if not nil, is what key held before this write, known to the
	// caller: then apply does not look it up (prefetchPrior). Only
	// Compact's moves know it (Txn.commitMoves).
	prior *keyState
}

// NewBatch returns an empty batch.
func (db *DB) NewBatch() *Batch { return &Batch{} }

// Put adds a write of value under key.
func (b *Batch) Put(key, value []byte) {
	if b.err == nil {
		if err := checkPut(key, value); err != nil {
			b.err = fmt.Errorf("batch op %d: %w", len(b.ops), err)
		}
	}
	b.ops = append(b.ops, batchOp{kind: opPut, key: b.copy(key), value: b.copy(value)})
}

// Delete adds a deletion of key.
func (b *Batch) Delete(key []byte) {
	if b.err == nil {
		if err := checkKey(key); err != nil {
			b.err = fmt.Errorf("batch op %d: %w", len(b.ops), err)
		}
	}
	b.ops = append(b.ops, batchOp{kind: opDelete, key: b.copy(key)})
}

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Reset empties the batch for reuse.
func (b *Batch) Reset() {
	clear(b.ops)
	b.ops, b.arena, b.err = b.ops[:0], b.arena[:0], nil
}

// copy appends p to the arena and returns the copy. Earlier copies stay
// valid when the arena grows because they keep the old backing array.
func (b *Batch) copy(p []byte) []byte {
	if len(p) > 4<<10 {
		return append([]byte(nil), p...)
	}
	if cap(b.arena)-len(b.arena) < len(p) {
		b.arena = make([]byte, 0, max(16<<10, len(p)))
	}
	n := len(b.arena)
	b.arena = append(b.arena, p...)
	return b.arena[n:len(b.arena):len(b.arena)]
}
