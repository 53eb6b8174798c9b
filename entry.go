package heapkv

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
)

// An index entry is the Pebble value stored under a user key. Wire format
// (never change; add a new kind instead):
//
//	inline:  +------+-------------------+
//	         | 0x01 | value bytes ...   |
//	         +------+-------------------+
//
//	heap:    +------+-------+-----------+-----------+-----------+--------+--------+---------------------+
//	         | 0x02 | codec | lsn       | rawLen    | storedLen | crc    | nExt   | nExt x (start, len) |
//	         | 1 B  | 1 B   | uvarint   | uvarint   | uvarint   | u32 LE | uvarint| uvarint, uvarint    |
//	         +------+-------+-----------+-----------+-----------+--------+--------+---------------------+
//
// rawLen is the value's length, storedLen the length of the (possibly
// compressed) bytes in the heap, crc the CRC-32C of those stored bytes, lsn
// the log record that wrote them. The extents hold storedLen bytes in order,
// filling every block but the last.
const (
	entryInline byte = 0x01
	entryHeap   byte = 0x02
)

// Codec names how a heap value's stored bytes encode the value.
type Codec uint8

// The codecs. A pointer records the codec its value was stored with, so
// values written under different Options.Compression settings live side by
// side (codec.go encodes and decodes them).
const (
	// CodecNone stores the value's bytes as they are.
	CodecNone Codec = 0
	// CodecS2 stores an S2 block (github.com/klauspost/compress/s2).
	CodecS2 Codec = 1
	// CodecZstd stores one zstd frame (github.com/klauspost/compress/zstd).
	CodecZstd Codec = 2
)

// maxExtents bounds the extents one pointer may hold, so that a corrupt
// entry cannot make a decoder allocate without limit.
const maxExtents = 1 << 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// pointer locates a heap value.
type pointer struct {
	codec     Codec
	lsn       base.LSN
	rawLen    uint64
	storedLen uint64
	crc       uint32
	extents   []alloc.Extent
}

// entry is a decoded index entry: either an inline value or a pointer.
type entry struct {
	inline []byte // valid when !isHeap; aliases the decoded buffer
	isHeap bool
	ptr    pointer
}

func appendInlineEntry(dst, value []byte) []byte {
	dst = append(dst, entryInline)
	return append(dst, value...)
}

func appendHeapEntry(dst []byte, p *pointer) []byte {
	dst = append(dst, entryHeap, byte(p.codec))
	dst = binary.AppendUvarint(dst, uint64(p.lsn))
	dst = binary.AppendUvarint(dst, p.rawLen)
	dst = binary.AppendUvarint(dst, p.storedLen)
	dst = binary.LittleEndian.AppendUint32(dst, p.crc)
	dst = binary.AppendUvarint(dst, uint64(len(p.extents)))
	for _, e := range p.extents {
		dst = binary.AppendUvarint(dst, e.Start)
		dst = binary.AppendUvarint(dst, uint64(e.Len))
	}
	return dst
}

// state returns what a key whose index entry is e holds.
func (e *entry) state() keyState {
	if !e.isHeap {
		return keyState{kind: keyInline, raw: uint64(len(e.inline))}
	}
	return keyState{kind: keyHeap, raw: e.ptr.rawLen, stored: e.ptr.storedLen, extents: e.ptr.extents}
}

// decodeEntry decodes the index entry raw of key, wrapping ErrCorrupt with
// the key if it does not decode. The entry aliases raw.
func (db *DB) decodeEntry(key, raw []byte) (entry, error) {
	var e entry
	err := db.decodeEntryTo(&e, key, raw, nil)
	return e, err
}

// decodeEntryTo is decodeEntry into *e (zero), with a heap pointer's
// extents appended to exts[:0], a buffer the caller reuses (the entry
// aliases it when it is large enough).
func (db *DB) decodeEntryTo(e *entry, key, raw []byte, exts []alloc.Extent) error {
	if err := decodeEntryTo(e, raw, db.geom, exts); err != nil {
		return fmt.Errorf("%w: index entry of key %q: %w", ErrCorrupt, key, err)
	}
	return nil
}

// decodeEntry parses an index entry. The heap geometry g validates the
// pointer's shape; an entry that does not parse is an error (the caller
// wraps ErrCorrupt with the key: see DB.decodeEntry). The returned entry
// aliases b.
func decodeEntry(b []byte, g alloc.Geometry) (entry, error) {
	var e entry
	err := decodeEntryTo(&e, b, g, nil)
	return e, err
}

// decodeEntryTo is decodeEntry into *e, which must be zero, appending a
// pointer's extents to exts[:0].
//
// A scan decodes an entry for every heap value it reads, so the pointer is
// parsed with a position into b (uvarintAt) rather than byteReader, whose
// calls and re-slicing cost half of the decode, each extent is checked
// with one division where alloc.Geometry.CheckExtent takes two, and the
// entry is filled in place rather than copied out: 45-59 ns became 27-29
// for a one-extent pointer (BenchmarkDecodeEntry). The checks accept
// exactly the extents CheckExtent accepts (TestDecodeEntryExtents).
func decodeEntryTo(e *entry, b []byte, g alloc.Geometry, exts []alloc.Extent) error {
	if len(b) == 0 {
		return fmt.Errorf("empty index entry")
	}
	switch b[0] {
	case entryInline:
		e.inline = b[1:]
		return nil
	case entryHeap:
	default:
		return fmt.Errorf("unknown index entry kind %#x", b[0])
	}
	e.isHeap = true
	p := &e.ptr
	if len(b) < 2 {
		return fmt.Errorf("heap pointer: truncated byte")
	}
	p.codec = Codec(b[1])
	i, ok := 2, true
	var lsn, n uint64
	lsn, i, ok = uvarintAt(b, i, ok)
	p.lsn = base.LSN(lsn)
	p.rawLen, i, ok = uvarintAt(b, i, ok)
	p.storedLen, i, ok = uvarintAt(b, i, ok)
	if ok && len(b)-i >= 4 {
		p.crc = binary.LittleEndian.Uint32(b[i:])
		i += 4
	} else {
		ok = false
	}
	n, i, ok = uvarintAt(b, i, ok)
	if !ok {
		return fmt.Errorf("heap pointer: truncated header")
	}
	if !p.codec.valid() {
		return fmt.Errorf("heap pointer: unknown codec %d", p.codec)
	}
	if p.rawLen > MaxValueSize || p.storedLen > MaxValueSize || p.storedLen == 0 {
		return fmt.Errorf("heap pointer: lengths raw %d stored %d out of range", p.rawLen, p.storedLen)
	}
	if p.codec == CodecNone && p.rawLen != p.storedLen {
		return fmt.Errorf("heap pointer: raw length %d != stored length %d without a codec", p.rawLen, p.storedLen)
	}
	// A value is stored compressed only when that saves a heap block.
	if p.codec != CodecNone && p.storedLen >= p.rawLen {
		return fmt.Errorf("heap pointer: %v value stored in %d bytes, not less than its %d", p.codec, p.storedLen, p.rawLen)
	}
	if n == 0 || n > maxExtents || n > uint64(len(b)-i) {
		return fmt.Errorf("heap pointer: %d extents", n)
	}
	if uint64(cap(exts)) < n {
		exts = make([]alloc.Extent, 0, n)
	}
	p.extents = exts[:0]
	segBlocks := uint64(g.SegmentBlocks)
	var total uint64
	for x := uint64(0); x < n; x++ {
		var start, l uint64
		start, i, ok = uvarintAt(b, i, true)
		l, i, ok = uvarintAt(b, i, ok)
		if !ok {
			return fmt.Errorf("heap pointer: extent %d: truncated", x)
		}
		// The extent lies in one segment: not empty, its offset in its
		// segment plus its length within the segment's blocks, and its
		// end below 2^64 (the last segment's end is not: Start+Len would
		// wrap to a small block number).
		if l == 0 || l > segBlocks || start%segBlocks+l > segBlocks || start+l < start {
			return fmt.Errorf("heap pointer: extent %d [%d+%d] is empty or not inside one segment of %d blocks", x, start, l, segBlocks)
		}
		total += l
		p.extents = append(p.extents, alloc.Extent{Start: start, Len: uint32(l)})
	}
	if want := uint64(g.BlocksFor(int64(p.storedLen))); total != want {
		return fmt.Errorf("heap pointer: %d blocks for %d stored bytes, want %d", total, p.storedLen, want)
	}
	if i != len(b) {
		return fmt.Errorf("heap pointer: %d trailing bytes", len(b)-i)
	}
	return nil
}

// uvarintAt decodes the uvarint at b[i:] and returns it with the position
// after it; ok is false (and stays false) once a uvarint is truncated or
// overflows. One byte, the common case, is decoded inline.
func uvarintAt(b []byte, i int, ok bool) (v uint64, next int, stillOK bool) {
	if !ok || i >= len(b) {
		return 0, i, false
	}
	if c := b[i]; c < 0x80 {
		return uint64(c), i + 1, true
	}
	v, n := binary.Uvarint(b[i:])
	if n <= 0 {
		return 0, i, false
	}
	return v, i + n, true
}

// byteReader decodes little-endian fields and uvarints, remembering the
// first error so that callers check once.
type byteReader struct {
	b   []byte
	err error
}

func (r *byteReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("truncated %s", what)
	}
	r.b = nil
}

func (r *byteReader) byte() byte {
	if len(r.b) < 1 {
		r.fail("byte")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *byteReader) uint32() uint32 {
	if len(r.b) < 4 {
		r.fail("uint32")
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *byteReader) uint64() uint64 {
	if len(r.b) < 8 {
		r.fail("uint64")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *byteReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns the next n bytes (aliasing the input).
func (r *byteReader) bytes(n uint64) []byte {
	if uint64(len(r.b)) < n {
		r.fail("byte string")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// extentBufs holds the extent buffers of Get and ViewValue: a read decodes
// its key's pointer into one, so that it allocates only the value it
// returns.
var extentBufs = sync.Pool{New: func() any { return new([]alloc.Extent) }}

// maxPooledExtents is the largest extent buffer kept in extentBufs.
const maxPooledExtents = 64

// getExtentBuf returns a buffer from extentBufs; putExtentBuf returns it
// with the extents a decode used (they may have grown it).
func getExtentBuf() *[]alloc.Extent { return extentBufs.Get().(*[]alloc.Extent) }

func putExtentBuf(bp *[]alloc.Extent, used []alloc.Extent) {
	if cap(used) > cap(*bp) && cap(used) <= maxPooledExtents {
		*bp = used[:0]
	}
	extentBufs.Put(bp)
}
