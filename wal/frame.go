package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Record framing. There are two frame formats, one per segment format (see
// segment.go): plain frames in format 0 segments (written by earlier
// versions, still read) and salted frames in format 1 segments (every
// segment this version writes). Wire formats (never change; add a segment
// format instead).
//
// Plain frame:
//
//	+---------+------------+----------+-----------+-------------------+
//	| crc32c  | payloadLen | lsn      | syncedLSN | payload           |
//	| 4 B LE  | 4 B LE     | 8 B LE   | 8 B LE    | payloadLen bytes  |
//	+---------+------------+----------+-----------+-------------------+
//	0         4            8          16          24                  24+payloadLen
//
// Salted frame:
//
//	+---------+------------+----------+-----------+----------+------------------+
//	| crc32c  | payloadLen | lsn      | syncedLSN | salt     | payload          |
//	| 4 B LE  | 4 B LE     | 8 B LE   | 8 B LE    | 8 B LE   | payloadLen bytes |
//	+---------+------------+----------+-----------+----------+------------------+
//	0         4            8          16          24         32                 32+payloadLen
//
// crc32c is CRC-32C (Castagnoli) over every byte after it: the length, both
// LSNs, the salt (salted frames) and the payload, so a record cannot be
// moved, renumbered or resized without detection. syncedLSN is the highest
// LSN that was durable (fsynced) when the record was framed; it is always
// < lsn. Records follow each other with no padding.
//
// The salt is the random 64-bit value in the header of the segment the
// record was written to, drawn anew each time a file becomes a segment. A
// recycled segment file (see spare.go) still holds the frames of its
// previous use after the new records; their salt is the old one, so the
// decoder refuses them (and their CRC, which covers the salt, fails if the
// salt field is overwritten with the new one) even when their LSNs would
// continue the log. This is how Pebble's recyclable record format carries
// the log number in every chunk.
const (
	recOffCRC    = 0
	recOffLen    = 4
	recOffLSN    = 8
	recOffSynced = 16
	recOffSalt   = 24

	// RecordHeaderSize is the size in bytes of a plain frame's fixed header.
	RecordHeaderSize = 24

	// SaltedRecordHeaderSize is the size in bytes of a salted frame's fixed
	// header.
	SaltedRecordHeaderSize = 32
)

// MaxPayloadSize is the largest payload a record may carry (128 MiB plus
// 64 KiB for keys and record overhead of the layer above). A length field
// above it marks a bad record; the decoder never allocates for it.
const MaxPayloadSize = 128<<20 + 64<<10

// castagnoli is the package's one CRC-32C table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadRecord is matched (errors.Is) by the *RecordError the decoders
// return for a record that is torn, truncated, zeroed or fails its checksum.
// Whether a bad record is a harmless torn tail or corruption is decided by
// Replay, not by the framing layer, so ErrBadRecord is not marked as
// corruption (base.ErrCorrupt): the errors Replay returns for a bad record
// that is damage wrap ErrCorrupt instead.
var ErrBadRecord = errors.New("wal: bad record")

// RecordError describes a bad record: where it starts and what is wrong.
// It matches ErrBadRecord with errors.Is.
type RecordError struct {
	Offset int64  // byte offset of the record's first byte in the stream
	Reason string // what is wrong, e.g. "checksum mismatch"
}

// Error implements error.
func (e *RecordError) Error() string {
	return fmt.Sprintf("wal: bad record at offset %d: %s", e.Offset, e.Reason)
}

// Is reports whether target is ErrBadRecord.
func (e *RecordError) Is(target error) bool { return target == ErrBadRecord }

// AppendRecord appends one plain frame (the format of format 0 segments) to
// dst and returns the extended slice. It panics if lsn is InvalidLSN, if synced >= lsn, or if the payload
// is longer than MaxPayloadSize: those are programmer errors (Log.Append
// checks the size and returns ErrRecordTooLarge first).
func AppendRecord(dst []byte, lsn, synced LSN, payload []byte) []byte {
	if lsn == InvalidLSN || synced >= lsn {
		panic(fmt.Sprintf("wal: AppendRecord with lsn %d, synced %d", lsn, synced))
	}
	if len(payload) > MaxPayloadSize {
		panic(fmt.Sprintf("wal: AppendRecord payload of %d bytes exceeds %d", len(payload), MaxPayloadSize))
	}
	start := len(dst)
	dst = append(dst, make([]byte, RecordHeaderSize)...)
	h := dst[start:]
	binary.LittleEndian.PutUint32(h[recOffLen:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[recOffLSN:], uint64(lsn))
	binary.LittleEndian.PutUint64(h[recOffSynced:], uint64(synced))
	dst = append(dst, payload...)
	crc := crc32.Update(0, castagnoli, dst[start+recOffLen:])
	binary.LittleEndian.PutUint32(dst[start+recOffCRC:], crc)
	return dst
}

// AppendSaltedRecord appends one salted frame (the format of current
// segments) carrying salt to dst and returns the extended slice. It panics
// on misuse, as AppendRecord does.
func AppendSaltedRecord(dst []byte, salt uint64, lsn, synced LSN, payload []byte) []byte {
	if lsn == InvalidLSN || synced >= lsn {
		panic(fmt.Sprintf("wal: AppendSaltedRecord with lsn %d, synced %d", lsn, synced))
	}
	if len(payload) > MaxPayloadSize {
		panic(fmt.Sprintf("wal: AppendSaltedRecord payload of %d bytes exceeds %d", len(payload), MaxPayloadSize))
	}
	start := len(dst)
	dst = append(dst, make([]byte, SaltedRecordHeaderSize)...)
	h := dst[start:]
	binary.LittleEndian.PutUint32(h[recOffLen:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[recOffLSN:], uint64(lsn))
	binary.LittleEndian.PutUint64(h[recOffSynced:], uint64(synced))
	binary.LittleEndian.PutUint64(h[recOffSalt:], salt)
	dst = append(dst, payload...)
	crc := crc32.Update(0, castagnoli, dst[start+recOffLen:])
	binary.LittleEndian.PutUint32(dst[start+recOffCRC:], crc)
	return dst
}

// saltedSize returns the encoded size of salted frames holding payloads.
func saltedSize(payloads [][]byte) int64 {
	n := int64(0)
	for _, p := range payloads {
		n += SaltedRecordHeaderSize + int64(len(p))
	}
	return n
}

// recordHeader is a parsed, not yet verified record header.
type recordHeader struct {
	crc    uint32
	n      uint32 // payload length
	lsn    LSN
	synced LSN
	salt   uint64 // salted frames only
}

func parseHeader(h []byte) recordHeader {
	return recordHeader{
		crc:    binary.LittleEndian.Uint32(h[recOffCRC:]),
		n:      binary.LittleEndian.Uint32(h[recOffLen:]),
		lsn:    LSN(binary.LittleEndian.Uint64(h[recOffLSN:])),
		synced: LSN(binary.LittleEndian.Uint64(h[recOffSynced:])),
	}
}

// check returns why the header cannot start a record, or "" if it may.
func (rh recordHeader) check() string {
	switch {
	case rh.crc == 0 && rh.n == 0 && rh.lsn == 0 && rh.synced == 0:
		return "zero header"
	case rh.n > MaxPayloadSize:
		return fmt.Sprintf("payload length %d exceeds maximum %d", rh.n, MaxPayloadSize)
	case rh.lsn == InvalidLSN:
		return "LSN 0"
	case rh.synced >= rh.lsn:
		return fmt.Sprintf("synced LSN %d not below LSN %d", rh.synced, rh.lsn)
	}
	return ""
}

// verify checks the checksum of a whole record (header and payload).
func verify(rec []byte, want uint32) string {
	if got := crc32.Update(0, castagnoli, rec[recOffLen:]); got != want {
		return fmt.Sprintf("checksum %08x, want %08x", got, want)
	}
	return ""
}

// decodeRecord decodes the record at the start of b. It returns the
// record's size n, or reason != "" for a bad record. b must not be empty.
func decodeRecord(b []byte) (rh recordHeader, payload []byte, n int, reason string) {
	if len(b) < RecordHeaderSize {
		if allZero(b) {
			return rh, nil, 0, "zero header"
		}
		return rh, nil, 0, fmt.Sprintf("truncated header (%d bytes)", len(b))
	}
	rh = parseHeader(b)
	if reason = rh.check(); reason != "" {
		return rh, nil, 0, reason
	}
	n = RecordHeaderSize + int(rh.n)
	if len(b) < n {
		return rh, nil, 0, fmt.Sprintf("truncated payload (%d of %d bytes)", len(b)-RecordHeaderSize, rh.n)
	}
	if reason = verify(b[:n], rh.crc); reason != "" {
		return rh, nil, 0, reason
	}
	return rh, b[RecordHeaderSize:n], n, ""
}

// decodeSaltedRecord decodes the salted frame at the start of b, which must
// carry salt. It returns the record's size n, or reason != "" for a bad
// record; stale reports a whole, valid frame that carries another salt (a
// frame of an earlier use of the file). b must not be empty.
func decodeSaltedRecord(b []byte, salt uint64) (rh recordHeader, payload []byte, n int, reason string, stale bool) {
	if len(b) < SaltedRecordHeaderSize {
		if allZero(b) {
			return rh, nil, 0, "zero header", false
		}
		return rh, nil, 0, fmt.Sprintf("truncated header (%d bytes)", len(b)), false
	}
	rh = parseHeader(b)
	rh.salt = binary.LittleEndian.Uint64(b[recOffSalt:])
	if reason = rh.check(); reason != "" {
		if reason == "zero header" && rh.salt != 0 {
			reason = "zero header but for the salt"
		}
		return rh, nil, 0, reason, false
	}
	n = SaltedRecordHeaderSize + int(rh.n)
	if len(b) < n {
		return rh, nil, 0, fmt.Sprintf("truncated payload (%d of %d bytes)", len(b)-SaltedRecordHeaderSize, rh.n), false
	}
	if reason = verify(b[:n], rh.crc); reason != "" {
		return rh, nil, 0, reason, false
	}
	if rh.salt != salt {
		return rh, nil, 0, fmt.Sprintf("stale frame of an earlier use of the file (salt %016x, segment's is %016x)", rh.salt, salt), true
	}
	return rh, b[SaltedRecordHeaderSize:n], n, "", false
}

// DecodeSaltedRecord decodes the salted frame at the start of b, which must
// carry salt (that of its segment), and returns its LSNs, its payload
// (aliasing b) and its encoded size n. It returns io.EOF if b is empty and a
// *RecordError (Offset 0) if b does not start with a whole, valid frame
// carrying salt: a valid frame with another salt is a bad record too.
func DecodeSaltedRecord(b []byte, salt uint64) (lsn, synced LSN, payload []byte, n int, err error) {
	if len(b) == 0 {
		return 0, 0, nil, 0, io.EOF
	}
	rh, payload, n, reason, _ := decodeSaltedRecord(b, salt)
	if reason != "" {
		return 0, 0, nil, 0, &RecordError{Offset: 0, Reason: reason}
	}
	return rh.lsn, rh.synced, payload, n, nil
}

// DecodeRecord decodes the plain frame at the start of b and returns its LSNs,
// its payload (aliasing b) and its encoded size n. It returns io.EOF if b is
// empty and a *RecordError (Offset 0) if b does not start with a whole,
// valid record.
func DecodeRecord(b []byte) (lsn, synced LSN, payload []byte, n int, err error) {
	if len(b) == 0 {
		return 0, 0, nil, 0, io.EOF
	}
	rh, payload, n, reason := decodeRecord(b)
	if reason != "" {
		return 0, 0, nil, 0, &RecordError{Offset: 0, Reason: reason}
	}
	return rh.lsn, rh.synced, payload, n, nil
}

// Decoder reads plain frames one after another from an io.Reader.
// It does not check that LSNs are dense; that is Replay's job.
type Decoder struct {
	r   io.Reader
	off int64 // offset of the next record
	hdr [RecordHeaderSize]byte
	buf bytes.Buffer // payload of the last record
	err error        // sticky: once a record is bad or I/O fails, Next repeats it
}

// NewDecoder returns a Decoder reading records from r, starting at offset 0.
func NewDecoder(r io.Reader) *Decoder { return &Decoder{r: r} }

// Offset returns the stream offset of the next record to decode (after an
// error: of the record that could not be decoded).
func (d *Decoder) Offset() int64 { return d.off }

// Next decodes the next record. The payload aliases the Decoder's buffer
// and is valid only until the next call. Outcomes:
//   - err == nil: a whole record with a valid checksum;
//   - err == io.EOF: clean end, the stream ended exactly at a record boundary;
//   - errors.Is(err, ErrBadRecord): a *RecordError (torn, truncated, zeroed
//     or failing its checksum) at Offset();
//   - any other error: the reader failed (wrapped).
//
// After any error Next keeps returning it.
func (d *Decoder) Next() (lsn, synced LSN, payload []byte, err error) {
	if d.err != nil {
		return 0, 0, nil, d.err
	}
	lsn, synced, payload, d.err = d.next()
	return lsn, synced, payload, d.err
}

func (d *Decoder) next() (lsn, synced LSN, payload []byte, err error) {
	bad := func(reason string) error { return &RecordError{Offset: d.off, Reason: reason} }
	n, err := io.ReadFull(d.r, d.hdr[:])
	switch {
	case err == io.EOF:
		return 0, 0, nil, io.EOF
	case err == io.ErrUnexpectedEOF:
		if allZero(d.hdr[:n]) {
			return 0, 0, nil, bad("zero header")
		}
		return 0, 0, nil, bad(fmt.Sprintf("truncated header (%d bytes)", n))
	case err != nil:
		return 0, 0, nil, fmt.Errorf("wal: read record header at offset %d: %w", d.off, err)
	}
	rh := parseHeader(d.hdr[:])
	if reason := rh.check(); reason != "" {
		return 0, 0, nil, bad(reason)
	}
	// Grow the buffer only as data actually arrives, so a torn length field
	// never causes a large allocation.
	d.buf.Reset()
	d.buf.Write(d.hdr[:])
	got, err := io.CopyN(&d.buf, d.r, int64(rh.n))
	if err == io.EOF {
		return 0, 0, nil, bad(fmt.Sprintf("truncated payload (%d of %d bytes)", got, rh.n))
	}
	if err != nil {
		return 0, 0, nil, fmt.Errorf("wal: read record payload at offset %d: %w", d.off, err)
	}
	rec := d.buf.Bytes()
	if reason := verify(rec, rh.crc); reason != "" {
		return 0, 0, nil, bad(reason)
	}
	d.off += int64(len(rec))
	return rh.lsn, rh.synced, rec[RecordHeaderSize:], nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
