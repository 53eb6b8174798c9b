package heapkv

import (
	"cmp"
	"fmt"
	"slices"
)

// The heap writes of values the leader writes. A write whose heap value
// is at most CarryLimit stored bytes (DB.leaderWrites) does not write the
// heap itself: its writer encodes the value and queues the request, and
// the commit leader, before admitting the group, allocates blocks for
// every such value from one cursor (alloc.AllocatePreferring), which hands
// out adjacent runs, and writes each run of adjacent values with one call.
// A durable write's record may also carry the value (groupCarries); a
// NoSync write's never does. On the VM of BENCHMARKS.md a 4 KiB pwrite
// costs the heap's writers about 11 µs of CPU under load, and most of it
// is per call: 64 concurrent writers paid it each, the leader pays it
// about once per group.
//
// The leader allocates in queue order and writes before the group takes
// its LSNs, so a request whose allocation or write fails is dropped
// exactly as if its writer had failed before queuing (its blocks go back,
// it takes no LSN); the records of the group still reach the log only
// after their values reached the heap (in the page cache; a record that
// does not carry its value is made durable only after a heap flush,
// invariant 1). The values a durable group's records carry are the
// exception: the leader allocates their blocks, and the heap writer
// writes them while the log is flushed (heapwriter.go).

// leaderCursor is the allocator cursor the leader prefers for carried
// values. Writers of other values take any idle cursor, so they seldom
// hold it.
const leaderCursor = 0

// maxCarriedRun bounds the bytes of one coalesced heap write.
const maxCarriedRun = 1 << 20

// carriedPiece is a stretch of one carried value that fills consecutive
// blocks from block start.
type carriedPiece struct {
	start uint64
	data  []byte
}

// leaderScratch is the leader's reusable state for writeCarried; only the
// leader (committer.leading) touches it.
type leaderScratch struct {
	pieces []carriedPiece
	buf    []byte
}

// writeCarried allocates the blocks of the heap values the requests of
// reqs carry, writes those the heap writer will not (heapwriter.go), and
// returns the requests that remain (a request whose allocation or write
// failed is woken with the error, its blocks given back). Whether their
// records carry their values (groupCarries) is decided here once for the
// group: the write-back of a heap-first group's runs starts here, and
// buildGroup follows the decision op by op (preparedOp.carried).
// Requests that admit drops later only make a group's values fewer, so a
// group that carries would still carry without them.
func (db *DB) writeCarried(reqs []*commitReq) (kept []*commitReq) {
	kept = reqs[:0]
	for _, r := range reqs {
		if err := db.allocCarried(r.ops); err != nil {
			db.dropRequest(r, err)
			continue
		}
		kept = append(kept, r)
	}
	carry := db.groupCarries(kept)
	// In the disk-full state the leader writes every value, so that an
	// ENOSPC fails only this group's requests.
	deferring := !db.reserve.diskFull.Load()
	sc := &db.leader
	sc.pieces = sc.pieces[:0]
	for _, r := range kept {
		markCarried(r, carry, deferring)
		for i := range r.ops {
			if p := &r.ops[i]; p.carry != nil && !p.deferred {
				sc.pieces = appendPieces(sc.pieces, p, db.geom.BlockSize)
			}
		}
	}
	if len(sc.pieces) == 0 {
		return kept
	}
	err := db.writePieces(sc, !carry)
	clear(sc.pieces) // drop the references to the writers' values
	if err != nil {
		// Which requests' blocks made it is unknown: all of them fail, as
		// they would have had each writer's own write failed.
		for _, r := range kept {
			db.dropRequest(r, err)
		}
		return kept[:0]
	}
	return kept
}

// markCarried decides which values of r its record carries: those the
// leader writes (preparedOp.carry), if the group carries (carry) and r is
// durable, while they total at most maxCarriedRecordBytes. If deferring,
// the heap writes of the carried values of at most smallCarriedValue are
// left to the heap writer (preparedOp.deferred). Larger ones the leader
// still writes: with 64 KiB values from 64 writers, deferring them made
// the leader so quick that groups shrank from 5.5-7.9 values (sent heap
// first, each byte written once) to 2.0-2.6, more of them single values
// carried and written twice, and Puts ran 0.60-0.95x as fast (six pairs,
// BENCHMARKS.md, "Carried values written by the heap writer").
func markCarried(r *commitReq, carry, deferring bool) {
	total := 0
	for i := range r.ops {
		p := &r.ops[i]
		p.carried = carry && r.sync && p.carry != nil && total+len(p.carry) <= maxCarriedRecordBytes
		p.deferred = p.carried && deferring && len(p.carry) <= smallCarriedValue
		if p.carried {
			total += len(p.carry)
		}
	}
}

// dropRequest fails r before it took an LSN: its blocks go back.
func (db *DB) dropRequest(r *commitReq, err error) {
	db.abortClaims(r.ops)
	r.err = err
	r.wake <- false
}

// allocCarried allocates the blocks of the values of ops the leader
// writes (preparedOp.carry). On an
// error the blocks it allocated stay claimed by their ops, for the caller
// to give back.
func (db *DB) allocCarried(ops []preparedOp) error {
	for i := range ops {
		p := &ops[i]
		if p.carry == nil {
			continue
		}
		claim, err := db.claimFor(p, len(p.carry), true)
		if err != nil {
			return fmt.Errorf("heapkv: write value of key %q: %w", p.key, diskError(err))
		}
		p.isHeap, p.claim, p.ptr.extents = true, claim, claim.Extents
	}
	return nil
}

// appendPieces appends the pieces of p's value: a piece per extent of its
// claim, each filling consecutive blocks from its start.
func appendPieces(pieces []carriedPiece, p *preparedOp, blockSize int) []carriedPiece {
	off := 0
	for _, e := range p.claim.Extents {
		n := min(int(e.Len)*blockSize, len(p.carry)-off)
		pieces = append(pieces, carriedPiece{start: e.Start, data: p.carry[off : off+n]})
		off += n
	}
	return pieces
}

// writePieces writes the pieces, in block order, one call per run of
// adjacent blocks (up to maxCarriedRun bytes). A run of several pieces is
// copied into one buffer, each piece's last block filled with zeros; a lone
// piece is written as it is unless its blocks are padded (padsBlocks), and
// then in the same call (a 4,100-byte value in 4 KiB blocks is one write,
// not writeBlocks' two). If heapFirst (a durable group whose records will
// not carry the values: groupCarries), each run's write-back starts at
// once (mirror.Set.StartWriteBack), for the group's heap flush to find on
// its way: synced 64 KiB Puts from 64 writers ran 1.12x as fast (median
// of five pairs, BENCHMARKS.md, "Heap-first groups: write-back started
// when the leader writes them").
func (db *DB) writePieces(sc *leaderScratch, heapFirst bool) error {
	bs := db.geom.BlockSize
	blocks := func(pc carriedPiece) uint64 { return uint64((len(pc.data) + bs - 1) / bs) }
	slices.SortFunc(sc.pieces, func(a, b carriedPiece) int { return cmp.Compare(a.start, b.start) })
	for i := 0; i < len(sc.pieces); {
		j, size := i+1, int(blocks(sc.pieces[i]))*bs
		for j < len(sc.pieces) && sc.pieces[j-1].start+blocks(sc.pieces[j-1]) == sc.pieces[j].start &&
			size+int(blocks(sc.pieces[j]))*bs <= maxCarriedRun {
			size += int(blocks(sc.pieces[j])) * bs
			j++
		}
		if j == i+1 && (len(sc.pieces[i].data) == size || !db.padsBlocks()) {
			// One piece of whole blocks, or one that is not padded: no
			// copy.
			if err := db.heap.WriteAt(sc.pieces[i].data, sc.pieces[i].start); err != nil {
				return fmt.Errorf("heapkv: write carried values: %w", diskError(err))
			}
			if heapFirst {
				db.heap.StartWriteBack(sc.pieces[i].start, size/bs)
			}
			i = j
			continue
		}
		buf := slices.Grow(sc.buf[:0], size)[:size]
		off := 0
		for _, pc := range sc.pieces[i:j] {
			n := copy(buf[off:], pc.data)
			end := off + int(blocks(pc))*bs
			clear(buf[off+n : end])
			off = end
		}
		if cap(buf) <= maxCarriedRun {
			sc.buf = buf
		}
		if err := db.heap.WriteAt(buf, sc.pieces[i].start); err != nil {
			return fmt.Errorf("heapkv: write carried values: %w", diskError(err))
		}
		if heapFirst {
			db.heap.StartWriteBack(sc.pieces[i].start, size/bs)
		}
		i = j
	}
	return nil
}
