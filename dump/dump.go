// Package dump reads and writes heapkv's export stream: every key and value
// of a database as of one snapshot, in key order, each record checksummed.
// The stream says nothing about how the database stored its data (block
// size, inline threshold, compression, mirrors), so a dump moves data
// between databases made with any options and by any later version that
// reads format 1.
//
// An incremental dump (flag 1) holds the values written after an earlier
// dump's LSN (Since) and, for every other key, the key alone (a kept
// entry): applied to a database restored from that earlier dump, it gives
// the snapshot's state, deletions included (a key the increment does not
// name is gone).
//
// Layout, little endian:
//
//	Header, 28 bytes (36 if incremental):
//	 0   [8]byte  magic "HEAPKVDM"
//	 8   u32      format version: 1
//	 12  u32      flags: 0, or 1 for an incremental dump (a reader refuses
//	              any other bit)
//	 16  u64      the LSN of the snapshot the dump was taken at
//	 24  u64      incremental only: Since, the LSN of the dump it follows
//	 24  u32      (32 if incremental) CRC-32C of every header byte before it
//
//	Entry, one per key, keys strictly increasing:
//	 0   u8       tag 1
//	 1   uvarint  key length k, 1 to Limits.MaxKey
//	 .   uvarint  value length n, 0 to Limits.MaxValue
//	 .   k bytes  key
//	 .   n bytes  value
//	 .   u32      CRC-32C (Castagnoli) of every byte of the entry before it
//
//	Kept entry, incremental dumps only, in the same key order:
//	 0   u8       tag 3
//	 1   uvarint  key length k
//	 .   k bytes  key
//	 .   u32      CRC-32C of every byte of the entry before it
//
//	End, 21 bytes, once, last:
//	 0   u8       tag 2
//	 1   u64      entries (kept ones included)
//	 9   u64      bytes: the sum of every key's and value's length
//	 17  u32      CRC-32C of the 17 bytes before it
//
// Nothing may follow End. A reader checks every checksum, the order of the
// keys, the counts in End against what it read, and that the stream ends
// right after End: a dump cut short, reordered, padded or damaged is an
// error wrapping ErrFormat.
package dump

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// ErrFormat marks a stream that is not a well-formed dump.
var ErrFormat = errors.New("heapkv dump: bad format")

// Version is the format version this package writes and reads.
const Version = 1

const (
	magic           = "HEAPKVDM"
	headerSize      = 28
	incrHeaderSize  = 36
	flagIncremental = 1
	tagEntry        = 1
	tagEnd          = 2
	tagKept         = 3
	endSize         = 21
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is what a dump says about itself.
type Header struct {
	Version     uint32
	LSN         uint64 // the snapshot's LSN in the database it came from
	Incremental bool   // holds kept entries; follows the dump at Since
	Since       uint64
}

// Limits bound what a Reader accepts, so that a damaged length cannot make
// it allocate without bound.
type Limits struct {
	MaxKey   int
	MaxValue int
}

// Writer writes a dump. Its methods are not safe for concurrent use.
type Writer struct {
	w       *bufio.Writer
	last    []byte
	entries uint64
	bytes   uint64
	scratch []byte
	sum     [4]byte
	err     error
	incr    bool
}

// NewWriter writes the header of a dump of the snapshot at lsn to w and
// returns a Writer for its entries.
func NewWriter(w io.Writer, lsn uint64) (*Writer, error) {
	return newWriter(w, Header{LSN: lsn})
}

// NewIncrementalWriter is NewWriter for an incremental dump that follows
// the dump taken at since (Keep writes its kept entries).
func NewIncrementalWriter(w io.Writer, lsn, since uint64) (*Writer, error) {
	return newWriter(w, Header{LSN: lsn, Incremental: true, Since: since})
}

func newWriter(w io.Writer, hd Header) (*Writer, error) {
	dw := &Writer{w: bufio.NewWriterSize(w, 256<<10), incr: hd.Incremental}
	h := make([]byte, 24, incrHeaderSize)
	copy(h, magic)
	binary.LittleEndian.PutUint32(h[8:], Version)
	binary.LittleEndian.PutUint64(h[16:], hd.LSN)
	if hd.Incremental {
		binary.LittleEndian.PutUint32(h[12:], flagIncremental)
		h = binary.LittleEndian.AppendUint64(h, hd.Since)
	}
	h = binary.LittleEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
	if _, err := dw.w.Write(h); err != nil {
		return nil, fmt.Errorf("heapkv dump: write header: %w", err)
	}
	return dw, nil
}

// Add writes one entry. Keys must be non-empty and strictly increasing.
func (w *Writer) Add(key, value []byte) error { return w.add(tagEntry, key, value) }

// Keep writes a kept entry: key holds the value it held at the dump this
// incremental one follows.
func (w *Writer) Keep(key []byte) error {
	if !w.incr {
		return errors.New("heapkv dump: Keep on a dump that is not incremental")
	}
	return w.add(tagKept, key, nil)
}

func (w *Writer) add(tag byte, key, value []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(key) == 0 || (w.entries > 0 && bytes.Compare(key, w.last) <= 0) {
		return fmt.Errorf("heapkv dump: key %q is empty or not after %q", key, w.last)
	}
	b := append(w.scratch[:0], tag)
	b = binary.AppendUvarint(b, uint64(len(key)))
	if tag == tagEntry {
		b = binary.AppendUvarint(b, uint64(len(value)))
	}
	crc := crc32.Update(0, castagnoli, b)
	crc = crc32.Update(crc, castagnoli, key)
	crc = crc32.Update(crc, castagnoli, value)
	w.scratch = b
	binary.LittleEndian.PutUint32(w.sum[:], crc)
	for _, p := range [][]byte{b, key, value, w.sum[:]} {
		if _, err := w.w.Write(p); err != nil {
			w.err = fmt.Errorf("heapkv dump: write entry %d: %w", w.entries, err)
			return w.err
		}
	}
	w.last = append(w.last[:0], key...)
	w.entries++
	w.bytes += uint64(len(key) + len(value))
	return nil
}

// Close writes End and flushes; it does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	var e [endSize]byte
	e[0] = tagEnd
	binary.LittleEndian.PutUint64(e[1:], w.entries)
	binary.LittleEndian.PutUint64(e[9:], w.bytes)
	binary.LittleEndian.PutUint32(e[17:], crc32.Checksum(e[:17], castagnoli))
	if _, err := w.w.Write(e[:]); err != nil {
		return fmt.Errorf("heapkv dump: write end: %w", err)
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("heapkv dump: flush: %w", err)
	}
	w.err = errors.New("heapkv dump: writer closed")
	return nil
}

// Reader reads a dump. Its methods are not safe for concurrent use.
type Reader struct {
	r       *bufio.Reader
	lim     Limits
	key     []byte
	value   []byte
	prev    []byte
	entries uint64
	bytes   uint64
	off     int64 // bytes consumed, for error messages
	done    bool
	incr    bool // the dump is incremental: kept entries may appear
	kept    bool // the last entry Next returned is a kept one
}

// NewReader reads and checks the header of the dump on r.
func NewReader(r io.Reader, lim Limits) (*Reader, Header, error) {
	dr := &Reader{r: bufio.NewReaderSize(r, 256<<10), lim: lim}
	h := make([]byte, headerSize, incrHeaderSize)
	if _, err := io.ReadFull(dr.r, h); err != nil {
		return nil, Header{}, dr.bad("header", err)
	}
	dr.off = headerSize
	if string(h[:8]) != magic {
		return nil, Header{}, fmt.Errorf("%w: not a heapkv dump (magic %q)", ErrFormat, h[:8])
	}
	flags := binary.LittleEndian.Uint32(h[12:])
	if flags == flagIncremental {
		h = h[:incrHeaderSize]
		if _, err := io.ReadFull(dr.r, h[headerSize:]); err != nil {
			return nil, Header{}, dr.bad("header", err)
		}
		dr.off = incrHeaderSize
	}
	n := len(h) - 4
	if got, want := binary.LittleEndian.Uint32(h[n:]), crc32.Checksum(h[:n], castagnoli); got != want {
		return nil, Header{}, fmt.Errorf("%w: header checksum %08x, want %08x", ErrFormat, got, want)
	}
	hd := Header{Version: binary.LittleEndian.Uint32(h[8:]), LSN: binary.LittleEndian.Uint64(h[16:])}
	if hd.Version != Version {
		return nil, hd, fmt.Errorf("%w: format version %d, this reader knows %d", ErrFormat, hd.Version, Version)
	}
	if flags != 0 && flags != flagIncremental {
		return nil, hd, fmt.Errorf("%w: unknown flags %#x", ErrFormat, flags)
	}
	if flags == flagIncremental {
		hd.Incremental, hd.Since, dr.incr = true, binary.LittleEndian.Uint64(h[24:]), true
		if hd.Since > hd.LSN {
			return nil, hd, fmt.Errorf("%w: an increment from LSN %d to the earlier LSN %d", ErrFormat, hd.Since, hd.LSN)
		}
	}
	return dr, hd, nil
}

// bad wraps a read error: the end of the stream where more was due is a
// dump cut short.
func (r *Reader) bad(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: cut short in the %s at byte %d", ErrFormat, what, r.off)
	}
	return fmt.Errorf("heapkv dump: read %s at byte %d: %w", what, r.off, err)
}

// Kept reports whether the entry Next returned last is a kept entry (its
// value is nil: the key holds what it held at the dump this one follows).
func (r *Reader) Kept() bool { return r.kept }

// Next returns the next entry, or io.EOF after a well-formed End. The
// slices are valid until the next call.
func (r *Reader) Next() (key, value []byte, err error) {
	if r.done {
		return nil, nil, io.EOF
	}
	start := r.off
	tag, err := r.r.ReadByte()
	if err != nil {
		return nil, nil, r.bad("entry tag", err)
	}
	r.off++
	switch {
	case tag == tagEnd:
		return nil, nil, r.end()
	case tag == tagEntry, tag == tagKept && r.incr:
	default:
		return nil, nil, fmt.Errorf("%w: tag %d at byte %d", ErrFormat, tag, start)
	}
	r.kept = tag == tagKept
	hdr := []byte{tag}
	k, err := r.uvarint(&hdr, "key length")
	if err != nil {
		return nil, nil, err
	}
	var n uint64
	if !r.kept {
		if n, err = r.uvarint(&hdr, "value length"); err != nil {
			return nil, nil, err
		}
	}
	if k == 0 || k > uint64(r.lim.MaxKey) || n > uint64(r.lim.MaxValue) {
		return nil, nil, fmt.Errorf("%w: entry %d at byte %d: key of %d bytes or value of %d (limits %d, %d)",
			ErrFormat, r.entries, start, k, n, r.lim.MaxKey, r.lim.MaxValue)
	}
	r.key = grow(r.key, int(k))
	r.value = grow(r.value, int(n))
	if _, err := io.ReadFull(r.r, r.key); err != nil {
		return nil, nil, r.bad("key", err)
	}
	if _, err := io.ReadFull(r.r, r.value); err != nil {
		return nil, nil, r.bad("value", err)
	}
	var c [4]byte
	if _, err := io.ReadFull(r.r, c[:]); err != nil {
		return nil, nil, r.bad("entry checksum", err)
	}
	r.off += int64(k + n + 4)
	crc := crc32.Update(crc32.Update(crc32.Checksum(hdr, castagnoli), castagnoli, r.key), castagnoli, r.value)
	if got := binary.LittleEndian.Uint32(c[:]); got != crc {
		return nil, nil, fmt.Errorf("%w: entry %d at byte %d: checksum %08x, want %08x", ErrFormat, r.entries, start, got, crc)
	}
	if r.entries > 0 && bytes.Compare(r.key, r.prev) <= 0 {
		return nil, nil, fmt.Errorf("%w: entry %d at byte %d: key %q is not after %q", ErrFormat, r.entries, start, r.key, r.prev)
	}
	r.prev = append(r.prev[:0], r.key...)
	r.entries++
	r.bytes += k + n
	if r.kept {
		return r.key, nil, nil
	}
	return r.key, r.value, nil
}

func (r *Reader) uvarint(hdr *[]byte, what string) (uint64, error) {
	v, err := binary.ReadUvarint(r.r)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, r.bad(what, err)
		}
		return 0, fmt.Errorf("%w: %s at byte %d: %w", ErrFormat, what, r.off, err)
	}
	n0 := len(*hdr)
	*hdr = binary.AppendUvarint(*hdr, v)
	r.off += int64(len(*hdr) - n0)
	return v, nil
}

// end checks End and that nothing follows it.
func (r *Reader) end() error {
	var e [endSize]byte
	e[0] = tagEnd
	if _, err := io.ReadFull(r.r, e[1:]); err != nil {
		return r.bad("end", err)
	}
	r.off-- // the tag, counted by Next, is part of End
	if got, want := binary.LittleEndian.Uint32(e[17:]), crc32.Checksum(e[:17], castagnoli); got != want {
		return fmt.Errorf("%w: end at byte %d: checksum %08x, want %08x", ErrFormat, r.off, got, want)
	}
	entries, n := binary.LittleEndian.Uint64(e[1:]), binary.LittleEndian.Uint64(e[9:])
	if entries != r.entries || n != r.bytes {
		return fmt.Errorf("%w: end says %d entries of %d bytes, the dump holds %d of %d", ErrFormat, entries, n, r.entries, r.bytes)
	}
	r.off += endSize
	if _, err := r.r.ReadByte(); err != io.EOF {
		if err == nil {
			return fmt.Errorf("%w: bytes after the end at byte %d", ErrFormat, r.off)
		}
		return r.bad("past the end", err)
	}
	r.done = true
	return io.EOF
}

// Counts returns the entries and key and value bytes read so far.
func (r *Reader) Counts() (entries, bytes uint64) { return r.entries, r.bytes }

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
