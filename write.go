package heapkv

import (
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
)

// The writer's side of the write path. Put, Delete, Apply and Txn.Commit
// all end in apply, which does everything it can outside any shared lock:
// it validates the batch, writes each heap value to blocks it allocates
// through a cursor (no allocator lock is shared), and looks up what each
// key holds now (the prefetch the leader trusts unless the key changed
// since). Then it queues the request for group commit (commit.go).

// WriteOptions control one write. A nil *WriteOptions means the database's
// default durability (Options.NoSync).
type WriteOptions struct {
	// Sync makes the write durable before it returns.
	Sync bool
}

// syncFor says whether a write with options wo must be durable.
func (db *DB) syncFor(wo *WriteOptions) bool {
	if wo == nil {
		return !db.opts.NoSync
	}
	return wo.Sync
}

// Put stores value under key with the database's default durability.
func (db *DB) Put(key, value []byte) error {
	if err := checkPut(key, value); err != nil {
		return err
	}
	// apply finishes with the caller's slices before it returns, so a
	// single write needs no copy.
	return db.apply([]batchOp{{kind: opPut, key: key, value: value}}, db.syncFor(nil), false, nil)
}

// Delete removes key. Deleting a missing key is not an error.
func (db *DB) Delete(key []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return db.apply([]batchOp{{kind: opDelete, key: key}}, db.syncFor(nil), false, nil)
}

// Apply commits every write in b atomically. A nil wo means the database's
// default durability. The batch may be reused after Apply returns.
func (db *DB) Apply(b *Batch, wo *WriteOptions) error {
	if b.err != nil {
		return b.err
	}
	return db.apply(b.ops, db.syncFor(wo), false, nil)
}

// apply commits validated ops atomically, durably if sync. fresh places
// their heap values in empty segments, in op order (preparedOp.fresh).
// check, if not nil, is the request's conflict check (Txn.Commit; see
// commitReq.check).
func (db *DB) apply(bops []batchOp, sync, fresh bool, check func(lsn base.LSN) error) (err error) {
	if len(bops) == 0 {
		return nil
	}
	start := time.Now()
	defer func() {
		if err == nil {
			db.stats.writeLatency.Since(start)
		}
	}()
	if err := db.checkBatchSize(bops); err != nil {
		return err
	}
	if err := db.errIfReadOnly("write to"); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.failed(); err != nil {
		return err
	}
	if db.reserve.diskFull.Load() && slices.ContainsFunc(bops, func(op batchOp) bool { return op.kind == opPut }) && !db.roomForValues() {
		return errDiskFull()
	}

	req := newCommitReq(len(bops), sync, check)
	for i, op := range bops {
		p := &req.ops[i]
		p.kind, p.key, p.fresh = op.kind, op.key, fresh
		if op.prior != nil {
			p.prior, p.prefetched = *op.prior, true
		}
		if op.kind != opPut {
			continue
		}
		if len(op.value) == 0 || len(op.value) <= db.opts.InlineThreshold {
			p.inline = op.value
			continue
		}
		if err := db.writeHeapValue(p, op.value); err != nil {
			db.abortClaims(req.ops[:i+1])
			req.release()
			return fmt.Errorf("heapkv: write value of key %q: %w", op.key, diskError(err))
		}
	}
	// The pin stays until the write returns, so past the building of its
	// group: while it is held, the leader keeps in recentWrites every
	// write the prefetch may have missed (pruneRecentWrites).
	pin := db.prefetchPrior(req.ops)
	defer db.writePins.unpin(pin)
	err = db.commitRequest(req)
	req.release() // not deferred: a panic may leave req queued
	return err
}

// checkBatchSize refuses a batch whose log record would be too large.
func (db *DB) checkBatchSize(bops []batchOp) error {
	if len(bops) > MaxBatchOps {
		return fmt.Errorf("%w: %d writes (limit %d)", ErrBatchTooLarge, len(bops), MaxBatchOps)
	}
	var recordBytes int
	for _, op := range bops {
		recordBytes += len(op.key) + 64
		if len(op.value) <= db.opts.InlineThreshold {
			recordBytes += len(op.value)
		}
	}
	if recordBytes > MaxBatchBytes {
		return fmt.Errorf("%w: about %d bytes of keys and inline values (limit %d)", ErrBatchTooLarge, recordBytes, MaxBatchBytes)
	}
	return nil
}

// prefetchPrior looks up what each op's key holds now, outside
// commit.mu, pinning the applied LSN it looked at; the leader uses the
// answer unless a commit after that LSN wrote the key (priorState). The
// caller unpins the returned token when the write returns, which is after
// its group is built. Ops whose prior the caller gave (batchOp.prior) are
// not looked up.
func (db *DB) prefetchPrior(ops []preparedOp) pinToken {
	db.scanPresenceOnce()
	tok := db.writePins.pinLoad(&db.applied)
	for i := range ops {
		p := &ops[i]
		if p.prefetched {
			continue
		}
		if st, err := db.indexState(p.key); err == nil {
			p.prior, p.priorAt, p.prefetched = st, tok.lsn, true
		}
	}
	return tok
}

// indexState returns what key holds in the index: absent without a lookup
// if the key filter rules it out (presence.go), else as lookupState reads
// it.
func (db *DB) indexState(key []byte) (keyState, error) {
	if !db.presence.absent(key) {
		return db.lookupState(key)
	}
	db.presence.skipped.Add(1)
	if db.opts.crossCheckPresence {
		if st, err := db.lookupState(key); err != nil || st.kind != keyAbsent {
			return keyState{}, fmt.Errorf("%w: key %q (lookup: %v, %v)", errPresenceMiss, key, st.kind, err)
		}
	}
	return keyState{kind: keyAbsent}, nil
}

// lookupState reads what key holds in the index: from the index-entry
// cache if it holds the key's entry (which is then the index's, as a Get
// would read it: entrycache.go), else from the index, without filling the
// cache (the write is about to replace the entry). The extents of a heap
// value will be freed by the write that replaces it, so they are checked
// against the allocator first.
func (db *DB) lookupState(key []byte) (keyState, error) {
	if ec := db.ecache; ec != nil {
		var buf [64]byte
		if raw, ok := ec.get(key, buf[:0]); ok {
			if db.opts.crossCheckEntryCache {
				if err := db.crossCheckEntry(key); err != nil {
					return keyState{}, err
				}
			}
			if len(raw) == 0 {
				return keyState{kind: keyAbsent}, nil // deleted (entryCache.store)
			}
			return db.entryState(key, raw)
		}
	}
	raw, closer, err := db.index.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return keyState{kind: keyAbsent}, nil
	} else if err != nil {
		return keyState{}, indexError(fmt.Sprintf("read the entry of %q", key), err)
	}
	defer closer.Close()
	return db.entryState(key, raw)
}

// entryState decodes an index entry of key into the state a write replaces,
// checking a heap value's extents against the allocator.
func (db *DB) entryState(key, raw []byte) (keyState, error) {
	e, err := db.decodeEntry(key, raw)
	if err != nil {
		return keyState{}, err
	}
	if err := db.checkAllocated(key, e.ptr.extents); err != nil {
		return keyState{}, err
	}
	return e.state(), nil
}

// checkAllocated returns ErrCorrupt unless every extent of key's heap
// value is allocated: a write that replaces the value frees them.
func (db *DB) checkAllocated(key []byte, extents []alloc.Extent) error {
	for _, x := range extents {
		if err := db.alloc.CheckExtent(x); err != nil || !db.alloc.IsAllocated(x) {
			return fmt.Errorf("%w: index entry of key %q points at %v, which is not an allocated extent of the heap", ErrCorrupt, key, x)
		}
	}
	return nil
}

// abortClaims gives back the blocks the heap values of ops were written to.
func (db *DB) abortClaims(ops []preparedOp) {
	for i := range ops {
		if ops[i].isHeap {
			db.alloc.Abort(ops[i].claim)
			ops[i].isHeap = false
		}
	}
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// writeHeapValue encodes value (compressed with Options.Compression when
// that saves at least one block: codec.go) and writes it to blocks it
// allocates. A value small enough for the leader to write (leaderWrites)
// is kept in p.carry instead, and the leader allocates and writes it
// (writeCarried), with a whole group's values in few calls; a durable
// write's log record may carry it too (the group decides: groupCarries).
// A larger value is written here, by its writer, and does not start its
// write-back early as the leader's heap-first groups do (writePieces):
// that cost 128 KiB synced YCSB writes 10-14% more CPU an operation for
// no gain (BENCHMARKS.md, "Heap-first groups: write-back started
// when the leader writes them").
func (db *DB) writeHeapValue(p *preparedOp, value []byte) error {
	stored, codec, done := db.encoder.encode(value, db.geom.BlockSize)
	defer done()
	p.ptr = pointer{
		codec:     codec,
		rawLen:    uint64(len(value)),
		storedLen: uint64(len(stored)),
		crc:       crcOf(stored),
	}
	cs := &db.stats.codec
	cs.values.Add(1)
	cs.rawBytes.Add(int64(len(value)))
	cs.stored.Add(int64(len(stored)))
	if codec != CodecNone {
		cs.compressed.Add(1)
	}
	if db.leaderWrites(len(stored)) {
		p.carry = stored
		if codec != CodecNone { // stored is the encoder's buffer, reused after done
			p.carry = append([]byte(nil), stored...)
		}
		return nil
	}
	claim, err := db.claimFor(p, len(stored), false)
	if err != nil {
		return err
	}
	p.isHeap, p.claim, p.ptr.extents = true, claim, claim.Extents
	return db.writeStored(stored, claim.Extents)
}

// claimFor claims the blocks of p's value of stored bytes: in empty
// segments after the previous such claim if p.fresh (alloc.AllocateFresh),
// else from the leader's cursor if the leader writes it (byLeader), else
// from any idle cursor.
func (db *DB) claimFor(p *preparedOp, stored int, byLeader bool) (alloc.Claim, error) {
	n := db.geom.BlocksFor(int64(stored))
	switch {
	case p.fresh:
		return db.alloc.AllocateFresh(n)
	case byLeader:
		return db.alloc.AllocatePreferring(leaderCursor, n)
	}
	return db.alloc.Allocate(n)
}

// leaderWrites reports whether the commit leader writes a heap value of
// stored bytes (Options.CarryLimit), and a durable write's log record may
// carry it: its group then needs one flush, of the log, instead of the
// heap's and then the log's. One write call per group instead of one per
// value saves CPU whether or not the write is durable.
func (db *DB) leaderWrites(stored int) bool { return stored <= db.opts.CarryLimit }

// writeStored writes a value's stored bytes to the extents that hold them,
// in order, filling every block but the last.
func (db *DB) writeStored(stored []byte, extents []alloc.Extent) error {
	bs := db.geom.BlockSize
	off := 0
	for _, e := range extents {
		n := min(int(e.Len)*bs, len(stored)-off)
		if err := db.writeBlocks(stored[off:off+n], e.Start); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// pageSize is the page size padsBlocks assumes: the common one (4 KiB).
const pageSize = 4096

// padsBlocks reports whether heap writes pad a value's last block with
// zeros: with blocks of a page or more, so that the heap only sees
// whole-page writes and the kernel never has to read a page to update part
// of it. Blocks smaller than a page share pages with other values anyway:
// a value is written as it is, and the rest of its last block is left as
// it was (no reader looks past a value's stored length).
func (db *DB) padsBlocks() bool { return db.geom.BlockSize >= pageSize }

// writeBlocks writes p at block start, padded as padsBlocks says.
func (db *DB) writeBlocks(p []byte, start uint64) error {
	if !db.padsBlocks() {
		return db.heap.WriteAt(p, start)
	}
	bs := db.geom.BlockSize
	full := len(p) / bs * bs
	if full > 0 {
		if err := db.heap.WriteAt(p[:full], start); err != nil {
			return err
		}
	}
	if full == len(p) {
		return nil
	}
	tail := db.blockPool.Get().(*[]byte)
	defer db.blockPool.Put(tail)
	n := copy(*tail, p[full:])
	clear((*tail)[n:])
	return db.heap.WriteAt(*tail, start+uint64(full/bs))
}
