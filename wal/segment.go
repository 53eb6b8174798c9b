package wal

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// Segment file layout. A segment is named "<first LSN, 20 decimal
// digits>.log" so that names sort in LSN order. The 4-byte format field
// says which frame format its records use. Wire formats (never change; add
// a format instead):
//
// Format 1, salted (every segment this version creates). The file is
// preallocated: created at Options.SegmentSize bytes, all written (zeros,
// or the old contents of a recycled file) and synced before it becomes a
// segment, so appending records overwrites allocated blocks.
//
//	+-----------------+--------+--------+-----------+--------+------------------+--------------------+
//	| filehdr.Header  | crc32c | format | first LSN | salt   | salted records   | zeros, or stale    |
//	| 32 B, kind "WL" | 4 B LE | 1      | 8 B LE    | 8 B LE | (see frame.go)   | bytes of old uses  |
//	+-----------------+--------+--------+-----------+--------+------------------+--------------------+
//	0                 32       36       40          48       56                                 SegmentSize
//
// Format 0, plain (written by earlier versions; still read, never
// written). The file grows with its records and ends after the last one.
//
//	+-----------------+--------+--------+-----------+----------------+
//	| filehdr.Header  | crc32c | format | first LSN | plain records  |
//	| 32 B, kind "WL" | 4 B LE | 0      | 8 B LE    | (see frame.go) |
//	+-----------------+--------+--------+-----------+----------------+
//	0                 32       36       40          48               EOF
//
// The segment header block (from byte 32) holds the LSN of the segment's
// first record, which must equal the one in the file name, and in format 1
// the salt that every record of this use of the file carries (random,
// never 0, drawn each time a file becomes a segment). Its CRC-32C covers
// the block after the CRC field: bytes 36..48 in format 0 (whose format
// field was a reserved zero), 36..56 in format 1. Older builds refuse
// format 1 segments (as corrupt: their checksum does not match).
//
// In format 1 the records end at the first frame that is not a valid
// record of this use: zeros (a new file) or a frame with another salt (a
// recycled one) is the normal end of the data, not damage (see replay.go).
const (
	segOffCRC    = filehdr.Size
	segOffFormat = filehdr.Size + 4
	segOffFirst  = filehdr.Size + 8
	segOffSalt   = filehdr.Size + 16

	segFormatPlain  = 0
	segFormatSalted = 1

	// SegmentHeaderSize is the number of bytes before the first record of a
	// format 0 (plain) segment: the file header plus the segment header
	// block.
	SegmentHeaderSize = filehdr.Size + 16

	// SaltedSegmentHeaderSize is the number of bytes before the first
	// record of a format 1 (salted) segment, the format Open writes.
	SaltedSegmentHeaderSize = filehdr.Size + 24
)

const (
	segNameDigits  = 20
	segNameSuffix  = ".log"
	spareSuffix    = ".spare"
	spareTmpSuffix = ".spare.tmp"
)

// SegmentName returns the file name of the segment whose first LSN is first.
func SegmentName(first LSN) string {
	return fmt.Sprintf("%0*d%s", segNameDigits, uint64(first), segNameSuffix)
}

// SpareName returns the file name of spare number id: a preallocated file
// waiting to become a segment (see spare.go). Replay never reads spares.
func SpareName(id uint64) string {
	return fmt.Sprintf("%0*d%s", segNameDigits, id, spareSuffix)
}

// parseNumbered returns the number of a file named "<20 digits><suffix>",
// or ok == false if name is not shaped like that.
func parseNumbered(name, suffix string) (v uint64, ok bool) {
	digits, found := strings.CutSuffix(name, suffix)
	if !found || len(digits) != segNameDigits {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	return v, err == nil
}

// parseSegmentName returns the first LSN encoded in a segment file name, or
// ok == false if name is not shaped like a segment name.
func parseSegmentName(name string) (first LSN, ok bool) {
	v, ok := parseNumbered(name, segNameSuffix)
	return LSN(v), ok
}

// encodeSegmentHeader returns the SaltedSegmentHeaderSize bytes starting a
// format 1 segment.
func encodeSegmentHeader(id filehdr.DBID, first LSN, salt uint64) []byte {
	b := make([]byte, SaltedSegmentHeaderSize)
	filehdr.Header{Kind: filehdr.KindLog, Version: filehdr.Version, DBID: id}.Encode(b)
	binary.LittleEndian.PutUint32(b[segOffFormat:], segFormatSalted)
	binary.LittleEndian.PutUint64(b[segOffFirst:], uint64(first))
	binary.LittleEndian.PutUint64(b[segOffSalt:], salt)
	binary.LittleEndian.PutUint32(b[segOffCRC:], crc32.Checksum(b[segOffFormat:], castagnoli))
	return b
}

// segHeader is what a segment's header says about its records.
type segHeader struct {
	format uint32
	salt   uint64 // format 1 only
	size   int    // bytes before the first record
}

// salted reports whether the segment holds salted frames (format 1).
func (h segHeader) salted() bool { return h.format == segFormatSalted }

// decode decodes the frame at the start of b (not empty) in the segment's
// format; see decodeRecord. A stale frame of format 1 is a bad record.
func (h segHeader) decode(b []byte) (rh recordHeader, payload []byte, n int, reason string) {
	if h.salted() {
		rh, payload, n, reason, _ = decodeSaltedRecord(b, h.salt)
		return rh, payload, n, reason
	}
	return decodeRecord(b)
}

// endsAt reports whether a format 1 segment's records end cleanly at off,
// where no valid record of this use starts: nothing at or after off bears
// the segment's salt, so what is there (zeros, stale frames of an earlier
// use, garbage) was not written since the file became this segment. A
// record torn by a crash, or valid records after a hole, leave their salt
// behind: that is a torn tail (or damage), not the end. (A torn first
// record whose salt bytes never reached the disk reads as a clean end;
// the outcome is the same, only the warning is missing.) Format 0
// segments end only at the end of the file.
func (h segHeader) endsAt(v *view, off int) (bool, error) {
	if !h.salted() {
		return false, nil
	}
	var salt [8]byte
	binary.LittleEndian.PutUint64(salt[:], h.salt)
	from := off + recOffSalt
	if from >= v.size {
		return true, nil
	}
	q, err := v.index(from, salt[:])
	return q < 0, err
}

// decodeAt decodes the frame at offset off of the segment v (off <
// v.size) as decode does, reading no more of v than the frame.
func (h segHeader) decodeAt(v *view, off int) (rh recordHeader, payload []byte, n int, reason string, err error) {
	hsize := RecordHeaderSize
	if h.salted() {
		hsize = SaltedRecordHeaderSize
	}
	b, err := v.at(off, hsize)
	if err != nil {
		return rh, nil, 0, "", err
	}
	if len(b) >= hsize {
		if m := parseHeader(b).n; m <= MaxPayloadSize {
			if b, err = v.at(off, hsize+int(m)); err != nil {
				return rh, nil, 0, "", err
			}
		}
	}
	rh, payload, n, reason = h.decode(b)
	return rh, payload, n, reason, nil
}

// segMagic is the start of every heapkv file (see internal/filehdr).
const segMagic = "HEAPKV"

// errTornHeader marks a segment header that is short or all zeros: what a
// crash leaves of a header that was never synced.
var errTornHeader = errors.New("torn segment header")

// checkSegmentHeader verifies the header at the start of b for the segment
// whose name says it starts at first, and returns what it says. A short or
// all-zero header gives errTornHeader; anything else wrong gives an error
// wrapping ErrCorrupt.
func checkSegmentHeader(b []byte, id filehdr.DBID, name string, first LSN) (segHeader, error) {
	if len(b) < SegmentHeaderSize {
		// A short file is torn if what is there could be the start of a
		// header; a short file with other bytes is foreign.
		m := min(len(b), len(segMagic))
		if allZero(b) || string(b[:m]) == segMagic[:m] {
			return segHeader{}, errTornHeader
		}
		return segHeader{}, fmt.Errorf("%w: segment %s: %d bytes, not a heapkv log segment", ErrCorrupt, name, len(b))
	}
	if allZero(b[:SegmentHeaderSize]) {
		return segHeader{}, errTornHeader
	}
	if _, err := filehdr.Check(b, filehdr.KindLog, id); err != nil {
		return segHeader{}, fmt.Errorf("%w: segment %s: %w", ErrCorrupt, name, err)
	}
	h := segHeader{format: binary.LittleEndian.Uint32(b[segOffFormat:])}
	switch h.format {
	case segFormatPlain:
		h.size = SegmentHeaderSize
	case segFormatSalted:
		h.size = SaltedSegmentHeaderSize
		if len(b) < h.size {
			return segHeader{}, errTornHeader
		}
		h.salt = binary.LittleEndian.Uint64(b[segOffSalt:])
	}
	if got, want := binary.LittleEndian.Uint32(b[segOffCRC:]), crc32.Checksum(b[segOffFormat:max(h.size, SegmentHeaderSize)], castagnoli); got != want {
		return segHeader{}, fmt.Errorf("%w: segment %s: segment header checksum %08x, want %08x", ErrCorrupt, name, got, want)
	}
	if h.size == 0 {
		return segHeader{}, fmt.Errorf("%w: segment %s: unknown segment format %d", ErrCorrupt, name, h.format)
	}
	if got := LSN(binary.LittleEndian.Uint64(b[segOffFirst:])); got != first {
		return segHeader{}, fmt.Errorf("%w: segment %s: header says first LSN %d, name says %d", ErrCorrupt, name, got, first)
	}
	return h, nil
}

// readHeader reads the header of segment s through v and checks it (see
// checkSegmentHeader): a read error is returned as it is.
func readHeader(v *view, id filehdr.DBID, s segmentFile) (segHeader, error) {
	b, err := v.at(0, SaltedSegmentHeaderSize)
	if err != nil {
		return segHeader{}, err
	}
	return checkSegmentHeader(b, id, s.path, s.first)
}

// segmentFile is one segment found in the directory.
type segmentFile struct {
	first LSN
	name  string // base name
	path  string
}

// listSegments returns the segments in dir sorted by first LSN. A missing
// directory is an empty log. Files not named like segments are ignored; a
// segment-shaped name with first LSN 0 is corruption.
func listSegments(o Options) ([]segmentFile, error) {
	names, err := o.FS.List(o.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wal: list %s: %w", o.Dir, err)
	}
	var segs []segmentFile
	for _, name := range names {
		first, ok := parseSegmentName(name)
		if !ok {
			continue
		}
		if first == InvalidLSN {
			return nil, fmt.Errorf("%w: segment %s: first LSN 0", ErrCorrupt, o.FS.PathJoin(o.Dir, name))
		}
		segs = append(segs, segmentFile{first: first, name: name, path: o.FS.PathJoin(o.Dir, name)})
	}
	slices.SortFunc(segs, func(a, b segmentFile) int { return cmp.Compare(a.first, b.first) })
	return segs, nil
}

// readPrefix returns up to n bytes from the start of a file (read-only).
func readPrefix(fsys vfs.FS, path string, n int) ([]byte, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", path, err)
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("wal: read %s: %w", path, err)
	}
	return b[:m], nil
}
