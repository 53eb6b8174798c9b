package heapkv

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/heapkv/heapkv/alloc"
)

// A log record is the redo record of one committed write (a Put, a Delete or
// a batch): every op in it takes effect together. The wal package frames it
// with its LSN and a CRC; this is the payload. Wire format (never change;
// add a new version instead):
//
//	+-----------+---------+-------+-------+-----
//	| version   | nOps    | op 1  | op 2  | ...
//	| 1 B: 1, 2 | uvarint |       |       |
//	+-----------+---------+-------+-------+-----
//
//	op:
//	+------+--------+-----+----------+-------+---------+---------+-----------+--------+--------------------+
//	| kind | keyLen | key | entryLen | entry | oldKind | oldRaw  | oldStored | nFreed | nFreed x           |
//	| 1 B  | uvarint|     | uvarint  |       | 1 B     | uvarint | uvarint   | uvarint| (start, len)uvarint|
//	+------+--------+-----+----------+-------+---------+---------+-----------+--------+--------------------+
//
//	version 2 only, after each op:
//	+------------+-----------------------------------------------+
//	| carriedLen | carried: the heap value's stored bytes, or     |
//	| uvarint    | nothing (carriedLen 0)                         |
//	+------------+-----------------------------------------------+
//
// A record is written as version 2 only when some op carries its value
// (a heap put of a group that must be durable: see DB.carries), so
// records without carried values keep version 1's bytes. A carried value
// is exactly the storedLen bytes the op's heap pointer names, with the
// pointer's CRC: its heap blocks were written but may not have been
// flushed when the record was, and recovery writes them again from here
// (invariant 1: a durable record's heap bytes are durable, or the record
// carries them).
//
// A record with nOps = 0 changes nothing; it is written only so that its
// synced stamp vouches for the records before it (see DB.vouchLocked).
//
// kind is opPut or opDelete; entry is the new index entry (see entry.go;
// empty for a delete). oldKind, oldRaw and oldStored describe the value the
// key had when the record was committed (for statistics), and the freed
// extents are the heap blocks that value occupied: replay frees exactly
// those, so recovery never has to consult the index to redo allocation.
const (
	recordVersion        byte = 1 // no op carries its value
	recordVersionCarried byte = 2 // every op ends with carriedLen and carried
)

const (
	opPut    byte = 1
	opDelete byte = 2
)

// What a key holds (keyState.kind; oldKind in a record op).
const (
	keyAbsent byte = 0
	keyInline byte = 1
	keyHeap   byte = 2
)

// keyState is what a key holds at one moment: nothing, an inline value of
// raw bytes, or a heap value of raw bytes stored in stored bytes over
// extents. A record op carries the state its write replaced (oldKind,
// oldRaw, oldStored, freed); the commit leader computes it (priorState)
// and the state the write leaves, for the counters.
type keyState struct {
	kind    byte
	raw     uint64
	stored  uint64
	extents []alloc.Extent // heap only: the blocks the value occupies
}

// logOp is one decoded op of a record.
type logOp struct {
	kind      byte
	key       []byte
	entry     []byte // encoded index entry for opPut
	oldKind   byte
	oldRaw    uint64
	oldStored uint64
	freed     []alloc.Extent
	carried   []byte // a heap put's stored bytes, if the record carries them
}

// appendRecord appends the record of ops to dst, growing dst once.
func appendRecord(dst []byte, ops []logOp) []byte {
	version := recordVersion
	size := 1 + binary.MaxVarintLen64
	for i := range ops {
		op := &ops[i]
		if len(op.carried) > 0 {
			version = recordVersionCarried
		}
		size += 2 + 6*binary.MaxVarintLen64 + len(op.key) + len(op.entry) + len(op.carried) +
			2*binary.MaxVarintLen64*len(op.freed)
	}
	dst = slices.Grow(dst, size)
	dst = append(dst, version)
	dst = binary.AppendUvarint(dst, uint64(len(ops)))
	for i := range ops {
		op := &ops[i]
		dst = append(dst, op.kind)
		dst = binary.AppendUvarint(dst, uint64(len(op.key)))
		dst = append(dst, op.key...)
		dst = binary.AppendUvarint(dst, uint64(len(op.entry)))
		dst = append(dst, op.entry...)
		dst = append(dst, op.oldKind)
		dst = binary.AppendUvarint(dst, op.oldRaw)
		dst = binary.AppendUvarint(dst, op.oldStored)
		dst = binary.AppendUvarint(dst, uint64(len(op.freed)))
		for _, e := range op.freed {
			dst = binary.AppendUvarint(dst, e.Start)
			dst = binary.AppendUvarint(dst, uint64(e.Len))
		}
		if version == recordVersionCarried {
			dst = binary.AppendUvarint(dst, uint64(len(op.carried)))
			dst = append(dst, op.carried...)
		}
	}
	return dst
}

// decodeRecord parses a record payload. The ops alias b. Errors describe
// what is wrong; the caller wraps ErrCorrupt with the LSN.
func decodeRecord(b []byte) ([]logOp, error) {
	r := byteReader{b: b}
	version := r.byte()
	if r.err == nil && version != recordVersion && version != recordVersionCarried {
		return nil, fmt.Errorf("record version %d, want %d or %d", version, recordVersion, recordVersionCarried)
	}
	n := r.uvarint()
	if r.err != nil {
		return nil, fmt.Errorf("record header: %w", r.err)
	}
	// Each op takes at least 7 bytes, which bounds n by the input. A record
	// of no ops is a vouch record (see DB.vouchLocked).
	if n > uint64(len(r.b))/7 {
		return nil, fmt.Errorf("record claims %d ops in %d bytes", n, len(r.b))
	}
	ops := make([]logOp, n)
	for i := range ops {
		op := &ops[i]
		op.kind = r.byte()
		op.key = r.bytes(r.uvarint())
		op.entry = r.bytes(r.uvarint())
		op.oldKind = r.byte()
		op.oldRaw = r.uvarint()
		op.oldStored = r.uvarint()
		nf := r.uvarint()
		if r.err != nil {
			return nil, fmt.Errorf("op %d: %w", i, r.err)
		}
		if nf > uint64(len(r.b))/2 || nf > maxExtents {
			return nil, fmt.Errorf("op %d: %d freed extents", i, nf)
		}
		for j := uint64(0); j < nf; j++ {
			start, l := r.uvarint(), r.uvarint()
			if l == 0 || l > 1<<32-1 {
				r.fail("extent length")
			}
			op.freed = append(op.freed, alloc.Extent{Start: start, Len: uint32(l)})
		}
		if version == recordVersionCarried {
			op.carried = r.bytes(r.uvarint())
		}
		if r.err != nil {
			return nil, fmt.Errorf("op %d: %w", i, r.err)
		}
		switch {
		case op.kind != opPut && op.kind != opDelete:
			return nil, fmt.Errorf("op %d: unknown kind %d", i, op.kind)
		case len(op.key) == 0 || len(op.key) > MaxKeySize:
			return nil, fmt.Errorf("op %d: key length %d", i, len(op.key))
		case op.kind == opPut && len(op.entry) == 0:
			return nil, fmt.Errorf("op %d: put without an entry", i)
		case op.kind == opDelete && len(op.entry) != 0:
			return nil, fmt.Errorf("op %d: delete with an entry", i)
		case op.oldKind > keyHeap:
			return nil, fmt.Errorf("op %d: unknown old kind %d", i, op.oldKind)
		case (op.oldKind == keyHeap) != (len(op.freed) > 0):
			return nil, fmt.Errorf("op %d: old kind %d with %d freed extents", i, op.oldKind, len(op.freed))
		case len(op.carried) > 0 && (op.kind != opPut || op.entry[0] != entryHeap):
			return nil, fmt.Errorf("op %d: carried value of %d bytes on an op that writes no heap value", i, len(op.carried))
		}
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes after %d ops", len(r.b), n)
	}
	return ops, nil
}
