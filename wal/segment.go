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
// digits>.log" so that names sort in LSN order. Wire format (never change):
//
//	+----------------------+--------+----------+-----------+---------------
//	| filehdr.Header       | crc32c | reserved | first LSN | records ...
//	| 32 B, kind "WL"      | 4 B LE | 4 B (0)  | 8 B LE    | (see frame.go)
//	+----------------------+--------+----------+-----------+---------------
//	0                      32       36         40          48
//
// The segment header block (bytes 32..48) holds the LSN of the segment's
// first record, which must equal the one in the file name; its CRC-32C
// covers bytes 36..48 and reserved must be zero. Records start at byte 48.
const (
	segOffCRC      = filehdr.Size
	segOffReserved = filehdr.Size + 4
	segOffFirst    = filehdr.Size + 8

	// SegmentHeaderSize is the number of bytes before a segment's first
	// record: the file header plus the segment header block.
	SegmentHeaderSize = filehdr.Size + 16
)

const (
	segNameDigits = 20
	segNameSuffix = ".log"
)

// SegmentName returns the file name of the segment whose first LSN is first.
func SegmentName(first LSN) string {
	return fmt.Sprintf("%0*d%s", segNameDigits, uint64(first), segNameSuffix)
}

// parseSegmentName returns the first LSN encoded in a segment file name, or
// ok == false if name is not shaped like a segment name.
func parseSegmentName(name string) (first LSN, ok bool) {
	digits, found := strings.CutSuffix(name, segNameSuffix)
	if !found || len(digits) != segNameDigits {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	return LSN(v), true
}

// encodeSegmentHeader returns the SegmentHeaderSize bytes starting a segment.
func encodeSegmentHeader(id filehdr.DBID, first LSN) []byte {
	b := make([]byte, SegmentHeaderSize)
	filehdr.Header{Kind: filehdr.KindLog, Version: filehdr.Version, DBID: id}.Encode(b)
	binary.LittleEndian.PutUint64(b[segOffFirst:], uint64(first))
	binary.LittleEndian.PutUint32(b[segOffCRC:], crc32.Checksum(b[segOffReserved:SegmentHeaderSize], castagnoli))
	return b
}

// segMagic is the start of every heapkv file (see internal/filehdr).
const segMagic = "HEAPKV"

// errTornHeader marks a segment header that is short or all zeros: what a
// crash leaves of a header that was never synced.
var errTornHeader = errors.New("torn segment header")

// checkSegmentHeader verifies the header at the start of b for the segment
// whose name says it starts at first. A short or all-zero header gives
// errTornHeader; anything else wrong gives an error wrapping ErrCorrupt.
func checkSegmentHeader(b []byte, id filehdr.DBID, name string, first LSN) error {
	if len(b) < SegmentHeaderSize {
		// A short file is torn if what is there could be the start of a
		// header; a short file with other bytes is foreign.
		m := min(len(b), len(segMagic))
		if allZero(b) || string(b[:m]) == segMagic[:m] {
			return errTornHeader
		}
		return fmt.Errorf("%w: segment %s: %d bytes, not a heapkv log segment", ErrCorrupt, name, len(b))
	}
	if allZero(b[:SegmentHeaderSize]) {
		return errTornHeader
	}
	if _, err := filehdr.Check(b, filehdr.KindLog, id); err != nil {
		return fmt.Errorf("%w: segment %s: %w", ErrCorrupt, name, err)
	}
	if got, want := binary.LittleEndian.Uint32(b[segOffCRC:]), crc32.Checksum(b[segOffReserved:SegmentHeaderSize], castagnoli); got != want {
		return fmt.Errorf("%w: segment %s: segment header checksum %08x, want %08x", ErrCorrupt, name, got, want)
	}
	if r := binary.LittleEndian.Uint32(b[segOffReserved:]); r != 0 {
		return fmt.Errorf("%w: segment %s: reserved header field is %#x", ErrCorrupt, name, r)
	}
	if got := LSN(binary.LittleEndian.Uint64(b[segOffFirst:])); got != first {
		return fmt.Errorf("%w: segment %s: header says first LSN %d, name says %d", ErrCorrupt, name, got, first)
	}
	return nil
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

// readFile returns the whole contents of a file (read-only).
func readFile(fsys vfs.FS, path string) ([]byte, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("wal: read %s: %w", path, err)
	}
	return b, nil
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
