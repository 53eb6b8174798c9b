package heapkv

import (
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/alloc"
)

// The write path. Apply prepares each heap value outside any shared lock
// (allocate blocks through a cursor, write them to the heap), then queues
// the batch for group commit. One leader at a time takes everything queued
// and, holding commitMu:
//
//  1. looks up each key's current entry, so the record names the extents
//     the write frees, and assigns LSNs;
//  2. appends the group's records with one write and, if any write in the
//     group wants durability, syncs the log; every log fsync first fsyncs
//     the heap (wal.Options.BeforeSync), so the heap is durable before the
//     log that points at it (invariant 1), including the fsync a log
//     rotation does on its own;
//  3. applies the group to the index as one batch;
//  4. publishes the new extents and queues the freed ones for deferred
//     reuse.
//
// Followers sleep until the leader finishes their group; leadership then
// passes to the first request that queued meanwhile.

// commitReq is one Apply call waiting for group commit.
type commitReq struct {
	ops  []preparedOp
	sync bool
	// check, if set, runs in the leader under commitMu, in queue order,
	// before the group's records are built, with the LSN the request will
	// take if it passes; an error fails this request alone and it takes no
	// LSN (transactions use it to detect conflicts against every commit
	// before it, including earlier ones of the group). See checkCommit.
	check func(lsn uint64) error
	err   error
	wake  chan bool // receives true to lead, false when committed
}

// preparedOp is a batch op with its heap value already written.
type preparedOp struct {
	kind   byte
	key    []byte
	inline []byte // for an inline put
	isHeap bool
	ptr    pointer // for a heap put; lsn is filled in by the leader
	claim  alloc.Claim

	// old is what the key held as of LSN oldAt, looked up by the writer
	// before it queued (prefetched), so that the leader need not read the
	// index under commitMu unless the key changed since (see recentWrites).
	old        oldValue
	oldAt      uint64
	prefetched bool
}

// committer is the group-commit queue.
type committer struct {
	// mu guards queue and leading.
	mu      sync.Mutex
	queue   []*commitReq
	leading bool
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Apply commits every write in b atomically. A nil wo means the database's
// default durability. The batch may be reused after Apply returns.
func (db *DB) Apply(b *Batch, wo *WriteOptions) error {
	if b.err != nil {
		return b.err
	}
	return db.apply(b.ops, wo)
}

// apply commits validated ops atomically.
func (db *DB) apply(bops []batchOp, wo *WriteOptions) error {
	return db.applyChecked(bops, db.syncFor(wo), nil)
}

// applyChecked is apply with a check hook for the request (Txn.Commit).
func (db *DB) applyChecked(bops []batchOp, sync bool, check func(lsn uint64) error) error {
	if len(bops) == 0 {
		return nil
	}
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
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.failed(); err != nil {
		return err
	}
	if db.diskFull.Load() && slices.ContainsFunc(bops, func(op batchOp) bool { return op.kind == opPut }) && !db.roomForValues() {
		return errDiskFull()
	}

	req := &commitReq{ops: make([]preparedOp, len(bops)), sync: sync, check: check}
	for i, op := range bops {
		p := &req.ops[i]
		p.kind, p.key = op.kind, op.key
		if op.kind != opPut {
			continue
		}
		if len(op.value) == 0 || len(op.value) <= db.opts.InlineThreshold {
			p.inline = op.value
			continue
		}
		if err := db.writeHeapValue(p, op.value); err != nil {
			db.abortClaims(req.ops[:i+1])
			return fmt.Errorf("heapkv: write value of key %q: %w", op.key, diskError(err))
		}
	}
	// Look up what each key holds now, outside commitMu; the leader uses
	// the answer unless a commit after oldAt wrote the key.
	tok := db.writePins.pinLoad(&db.lastApplied)
	defer db.writePins.unpin(tok)
	for i := range req.ops {
		p := &req.ops[i]
		if old, err := db.lookupOld(p.key); err == nil {
			p.old, p.oldAt, p.prefetched = old, tok.lsn, true
		}
	}
	return db.commit(req)
}

func (db *DB) abortClaims(ops []preparedOp) {
	for i := range ops {
		if ops[i].isHeap {
			db.alloc.Abort(ops[i].claim)
			ops[i].isHeap = false
		}
	}
}

// commit queues req and returns once its group has committed (or failed).
func (db *DB) commit(req *commitReq) error {
	req.wake = make(chan bool, 1)
	c := &db.committer
	c.mu.Lock()
	c.queue = append(c.queue, req)
	if c.leading {
		c.mu.Unlock()
		if lead := <-req.wake; !lead {
			return req.err
		}
		c.mu.Lock()
	} else {
		c.leading = true
	}
	group := c.queue
	c.queue = nil
	c.mu.Unlock()

	db.commitGroup(group)

	c.mu.Lock()
	if len(c.queue) > 0 {
		c.queue[0].wake <- true
	} else {
		c.leading = false
	}
	c.mu.Unlock()
	for _, r := range group {
		if r != req {
			r.wake <- false
		}
	}
	return req.err
}

// oldValue is what a key held before an op in the group being committed.
type oldValue struct {
	kind   byte
	raw    uint64
	stored uint64
	freed  []alloc.Extent
}

// commitGroup runs the leader's steps for group; it sets every req.err.
func (db *DB) commitGroup(all []*commitReq) {
	db.commitMu.Lock()
	defer db.commitMu.Unlock()
	log := db.log.Load()
	first := uint64(log.NextLSN())
	// Requests whose check fails drop out before they take an LSN.
	group := make([]*commitReq, 0, len(all))
	for _, r := range all {
		if err := db.checkCommit(r, first+uint64(len(group))); err != nil {
			r.err = err
			db.abortClaims(r.ops)
			continue
		}
		group = append(group, r)
	}
	if len(group) == 0 {
		return
	}
	fail := func(err error) {
		for _, r := range group {
			r.err = err
		}
	}
	if err := db.failed(); err != nil {
		db.abortAll(group)
		fail(err)
		return
	}

	// Step 1: old values, records and the index batch.
	seen := make(map[string]oldValue)
	payloads := make([][]byte, len(group))
	batch := db.index.NewBatch()
	defer batch.Close()
	var freed [][]alloc.Extent // per record, in order
	delta := counters{}
	anySync := false
	var entryBuf []byte
	for i, r := range group {
		lsn := first + uint64(i)
		anySync = anySync || r.sync
		ops := make([]logOp, len(r.ops))
		var recFreed []alloc.Extent
		for j := range r.ops {
			p := &r.ops[j]
			old, err := db.oldValue(seen, p)
			if err != nil {
				db.abortAll(group)
				fail(err)
				return
			}
			op := &ops[j]
			op.kind, op.key = p.kind, p.key
			op.oldKind, op.oldRaw, op.oldStored, op.freed = old.kind, old.raw, old.stored, old.freed
			recFreed = append(recFreed, old.freed...)
			delta.remove(old)
			var now oldValue
			switch {
			case p.kind == opDelete:
				now = oldValue{kind: oldAbsent}
				if err := batch.Delete(p.key, nil); err != nil {
					db.abortAll(group)
					fail(fmt.Errorf("heapkv: index batch: %w", err))
					return
				}
			case p.isHeap:
				p.ptr.lsn = lsn
				entryBuf = appendHeapEntry(entryBuf[:0], &p.ptr)
				now = oldValue{kind: oldHeap, raw: p.ptr.rawLen, stored: p.ptr.storedLen, freed: p.ptr.extents}
			default:
				entryBuf = appendInlineEntry(entryBuf[:0], p.inline)
				now = oldValue{kind: oldInline, raw: uint64(len(p.inline))}
			}
			if p.kind == opPut {
				op.entry = append([]byte(nil), entryBuf...)
				if err := batch.Set(p.key, op.entry, nil); err != nil {
					db.abortAll(group)
					fail(fmt.Errorf("heapkv: index batch: %w", err))
					return
				}
			}
			delta.add(now)
			seen[string(p.key)] = now
		}
		payloads[i] = appendRecord(nil, ops)
		freed = append(freed, recFreed)
	}
	last := first + uint64(len(group)) - 1
	var nbytes, heapBytes int64 // log bytes; heap bytes the records point at
	for _, p := range payloads {
		nbytes += int64(len(p))
	}
	for _, r := range group {
		for j := range r.ops {
			if r.ops[j].isHeap {
				heapBytes += int64(r.ops[j].ptr.storedLen)
			}
		}
	}

	// Step 2: log append and sync (heap first).
	db.appendMu.Lock()
	err := func() error {
		// A NoSync database syncs once NoSyncFlushBytes of log and heap
		// writes are unsynced, which bounds what a crash can take and how
		// long freed space waits.
		flush := anySync || db.unsynced+nbytes+heapBytes >= db.opts.NoSyncFlushBytes
		if _, err := log.Append(payloads); err != nil {
			return fmt.Errorf("heapkv: append to log: %w", err)
		}
		db.unsynced += nbytes + heapBytes
		if flush {
			if err := log.Sync(); err != nil { // heap first: BeforeSync
				return fmt.Errorf("heapkv: sync heap and log: %w", err)
			}
			db.unsynced = 0
		}
		return nil
	}()
	db.appendMu.Unlock()
	if err != nil {
		// The records may or may not be on disk: stop writing, keep the
		// claims allocated (recovery decides from the log), report.
		fail(db.fail(err))
		return
	}

	// Step 3: the index.
	if err := batch.Commit(pebble.NoSync); err != nil {
		fail(db.fail(fmt.Errorf("apply to index: %w", err)))
		return
	}
	db.appliedLSN = last
	db.lastApplied.Store(last)
	db.noteWrites(group, first)
	db.counters.keys += delta.keys
	db.counters.inlineBytes += delta.inlineBytes
	db.counters.heapRawBytes += delta.heapRawBytes
	db.counters.heapStoredBytes += delta.heapStoredBytes
	db.sinceCkpt += nbytes
	// On a full disk, checkpoints come sooner: each gives log space back.
	if (db.opts.CheckpointLogBytes > 0 && db.sinceCkpt >= db.opts.CheckpointLogBytes) ||
		(db.diskFull.Load() && db.sinceCkpt >= db.opts.DiskReserve/8) {
		select {
		case db.ckptKick <- struct{}{}:
		default:
		}
	}

	// Step 4: publish and defer frees.
	for i, r := range group {
		for j := range r.ops {
			if r.ops[j].isHeap {
				db.alloc.Publish(r.ops[j].claim)
			}
		}
		db.frees.push(first+uint64(i), freed[i], db.geom.BlockSize)
		db.vcache.drop(freed[i])
	}
	db.releaseFreesLocked()
	db.stats.commits.Add(int64(len(group)))
	db.stats.groups.Add(1)
}

func (db *DB) abortAll(group []*commitReq) {
	for _, r := range group {
		db.abortClaims(r.ops)
	}
}

// oldValue returns what p's key holds now: from earlier ops of the group
// being committed, else from the writer's prefetch if no commit since wrote
// the key, else from the index.
// REQUIRES: db.commitMu held.
func (db *DB) oldValue(seen map[string]oldValue, p *preparedOp) (oldValue, error) {
	if v, ok := seen[string(p.key)]; ok {
		return v, nil
	}
	if p.prefetched {
		if at, ok := db.recentWrites[string(p.key)]; !ok || at <= p.oldAt {
			return p.old, nil
		}
	}
	return db.lookupOld(p.key)
}

// noteWrites records the LSN of the last write of each key of a committed
// group, for oldValue's prefetch check, and forgets what no queued writer
// can need: entries at or below the smallest LSN a writer prefetched at.
// REQUIRES: db.commitMu held.
func (db *DB) noteWrites(group []*commitReq, first uint64) {
	for i, r := range group {
		for j := range r.ops {
			db.recentWrites[string(r.ops[j].key)] = first + uint64(i)
		}
	}
	if len(db.recentWrites) < db.recentLimit {
		return
	}
	bound := db.lastApplied.Load()
	if m, n := db.writePins.min(); n > 0 {
		bound = min(bound, m)
	}
	for k, lsn := range db.recentWrites {
		if lsn <= bound {
			delete(db.recentWrites, k)
		}
	}
	db.recentLimit = max(4096, 2*len(db.recentWrites))
}

// lookupOld reads what key holds in the index.
func (db *DB) lookupOld(key []byte) (oldValue, error) {
	raw, closer, err := db.index.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return oldValue{kind: oldAbsent}, nil
	} else if err != nil {
		return oldValue{}, indexError(fmt.Sprintf("read old entry of %q", key), err)
	}
	defer closer.Close()
	e, err := decodeEntry(raw, db.geom.BlockSize, db.geom.SegmentBlocks)
	if err != nil {
		return oldValue{}, fmt.Errorf("%w: index entry of key %q: %v", ErrCorrupt, key, err)
	}
	if !e.isHeap {
		return oldValue{kind: oldInline, raw: uint64(len(e.inline))}, nil
	}
	for _, x := range e.ptr.extents {
		// The extents will be freed; make sure they are extents of this
		// heap and allocated before trusting them.
		if err := db.alloc.CheckExtent(x); err != nil || !db.alloc.IsAllocated(x) {
			return oldValue{}, fmt.Errorf("%w: index entry of key %q points at %v, which is not an allocated extent of the heap", ErrCorrupt, key, x)
		}
	}
	return oldValue{kind: oldHeap, raw: e.ptr.rawLen, stored: e.ptr.storedLen, freed: e.ptr.extents}, nil
}

func (c *counters) add(v oldValue) {
	switch v.kind {
	case oldInline:
		c.keys++
		c.inlineBytes += int64(v.raw)
	case oldHeap:
		c.keys++
		c.heapRawBytes += int64(v.raw)
		c.heapStoredBytes += int64(v.stored)
	}
}

func (c *counters) remove(v oldValue) {
	switch v.kind {
	case oldInline:
		c.keys--
		c.inlineBytes -= int64(v.raw)
	case oldHeap:
		c.keys--
		c.heapRawBytes -= int64(v.raw)
		c.heapStoredBytes -= int64(v.stored)
	}
}

// releaseFreesLocked returns to the allocator every deferred free that is
// safe to reuse (invariant 5):
//
//   - its record is durable, and more: vouched for on disk, i.e. at or below
//     the log's VouchedLSN or the last checkpoint. Recovery reads back the
//     values of records it cannot prove durable and cuts the log at the
//     first one that is not intact; had a durable but unvouched record's
//     freed blocks been reused, a value it superseded would read back
//     wrong, and an acknowledged write would be dropped as a torn tail;
//   - no reader pinned below it remains.
//
// REQUIRES: db.commitMu held.
func (db *DB) releaseFreesLocked() {
	log := db.log.Load()
	if log == nil {
		return
	}
	limit := max(uint64(log.VouchedLSN()), db.ckptLSN.Load())
	if pinned, n := db.pins.min(); n > 0 {
		limit = min(limit, pinned)
	}
	if limit == math.MaxUint64 {
		return
	}
	db.frees.release(limit, db.alloc, db.geom.BlockSize)
}

// vouchLocked makes every committed write durable and vouched for on disk
// (wal.Log.VouchedLSN), so that every deferred free that no reader holds
// can be reused now: after the sync, it appends a record of no ops, whose
// stamp vouches for everything before it, and syncs again.
// REQUIRES: db.commitMu held (the record takes an LSN).
func (db *DB) vouchLocked() error {
	if err := db.syncDurable(); err != nil {
		return err
	}
	log := db.log.Load()
	if log.VouchedLSN() >= log.SyncedLSN() || db.frees.bytes == 0 {
		return nil
	}
	db.appendMu.Lock()
	defer db.appendMu.Unlock()
	lsn, err := log.Append([][]byte{appendRecord(nil, nil)})
	if err == nil {
		err = log.Sync()
	}
	if err != nil {
		return fmt.Errorf("heapkv: write vouch record: %w", err)
	}
	db.appliedLSN = uint64(lsn)
	db.lastApplied.Store(uint64(lsn))
	return nil
}

// syncDurable makes every committed write durable: the heap first, then the
// log (invariant 1).
func (db *DB) syncDurable() error {
	log := db.log.Load()
	if log == nil {
		return nil
	}
	db.appendMu.Lock()
	defer db.appendMu.Unlock()
	if db.unsynced == 0 {
		return nil // every appended record is already durable
	}
	if err := log.Sync(); err != nil { // syncs the heap first (wal.Options.BeforeSync)
		return fmt.Errorf("heapkv: sync heap and log: %w", err)
	}
	db.unsynced = 0
	return nil
}
