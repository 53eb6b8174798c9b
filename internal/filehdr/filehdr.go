// Package filehdr reads and writes the fixed header that starts every file
// heapkv creates, so that a foreign file, a file of the wrong kind, a file
// from another database or a file written by a newer format is refused with
// a clear error before any of its contents are trusted.
//
// Wire format (never change; add a new Version instead):
//
//	+--------+------+---------+------------------+--------+
//	| magic  | kind | version | database ID      | CRC    |
//	| 6 B    | 2 B  | 4 B LE  | 16 B             | 4 B LE |
//	+--------+------+---------+------------------+--------+
//	0        6      8         12                 28       32
//
// magic is "HEAPKV"; kind names the file's role ("MF" MANIFEST, "WL" log
// segment, "HP" heap replica, "AL" allocation snapshot, "TR" replica
// tracking state, "SM" the log's sync mark, "MR" mirror directory marker,
// "BK" a backup's state);
// the CRC is CRC-32C (Castagnoli) over bytes 0..28.
package filehdr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/heapkv/heapkv/internal/base"
)

// Size is the encoded size of a Header in bytes.
const Size = 32

// Version is the current format version written into every new file.
const Version uint32 = 1

const (
	magic      = "HEAPKV"
	offKind    = 6
	offVersion = 8
	offDBID    = 12
	offCRC     = 28
)

// Kind is the two-letter role of a file.
type Kind [2]byte

// The kinds of file heapkv writes.
var (
	KindManifest = Kind{'M', 'F'}
	KindLog      = Kind{'W', 'L'}
	KindHeap     = Kind{'H', 'P'}
	KindAlloc    = Kind{'A', 'L'}
	KindTracking = Kind{'T', 'R'}
	KindSyncMark = Kind{'S', 'M'}
	KindMirror   = Kind{'M', 'R'}
	KindBackup   = Kind{'B', 'K'}
	KindKeys     = Kind{'K', 'F'}
)

// String returns the kind's two letters.
func (k Kind) String() string { return string(k[:]) }

// DBID identifies one database; every file it writes carries it.
type DBID [16]byte

// String formats the ID as 32 hex digits.
func (id DBID) String() string { return fmt.Sprintf("%x", id[:]) }

// Header is the decoded file header.
type Header struct {
	Kind    Kind
	Version uint32
	DBID    DBID
}

// ErrBadHeader is returned (wrapped) when a header is short, has the wrong
// magic, fails its checksum, has an unknown version, or names another kind
// or database than the caller expected. A bad header is damage (or a file
// that does not belong where it was found), so ErrBadHeader is marked as
// corruption: errors that wrap it also satisfy errors.Is(err,
// base.ErrCorrupt).
var ErrBadHeader = base.MarkCorrupt(errors.New("filehdr: bad file header"))

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode writes h into the first Size bytes of dst and returns dst[:Size].
func (h Header) Encode(dst []byte) []byte {
	dst = dst[:Size]
	copy(dst, magic)
	copy(dst[offKind:], h.Kind[:])
	binary.LittleEndian.PutUint32(dst[offVersion:], h.Version)
	copy(dst[offDBID:], h.DBID[:])
	binary.LittleEndian.PutUint32(dst[offCRC:], crc32.Checksum(dst[:offCRC], castagnoli))
	return dst
}

// Decode parses a header from b without checking kind or database.
func Decode(b []byte) (Header, error) {
	var h Header
	if len(b) < Size {
		return h, fmt.Errorf("%w: %d bytes, want %d", ErrBadHeader, len(b), Size)
	}
	if string(b[:offKind]) != magic {
		return h, fmt.Errorf("%w: not a heapkv file (magic %q)", ErrBadHeader, b[:offKind])
	}
	if got, want := binary.LittleEndian.Uint32(b[offCRC:]), crc32.Checksum(b[:offCRC], castagnoli); got != want {
		return h, fmt.Errorf("%w: checksum %08x, want %08x", ErrBadHeader, got, want)
	}
	copy(h.Kind[:], b[offKind:offVersion])
	h.Version = binary.LittleEndian.Uint32(b[offVersion:])
	copy(h.DBID[:], b[offDBID:offCRC])
	if h.Version == 0 || h.Version > Version {
		return h, fmt.Errorf("%w: format version %d (this build reads 1..%d)", ErrBadHeader, h.Version, Version)
	}
	return h, nil
}

// Check parses a header and verifies that it is of kind k and, unless id is
// the zero DBID, that it belongs to database id.
func Check(b []byte, k Kind, id DBID) (Header, error) {
	h, err := Decode(b)
	if err != nil {
		return h, err
	}
	if h.Kind != k {
		return h, fmt.Errorf("%w: file is a %s, want %s", ErrBadHeader, h.Kind, k)
	}
	if id != (DBID{}) && h.DBID != id {
		return h, fmt.Errorf("%w: file belongs to database %s, not %s", ErrBadHeader, h.DBID, id)
	}
	return h, nil
}

// Read reads and checks a header from the start of r.
func Read(r io.ReaderAt, k Kind, id DBID) (Header, error) {
	var b [Size]byte
	n, err := r.ReadAt(b[:], 0)
	if n < Size {
		if err == nil || errors.Is(err, io.EOF) {
			return Header{}, fmt.Errorf("%w: file has %d bytes, want at least %d", ErrBadHeader, n, Size)
		}
		return Header{}, fmt.Errorf("filehdr: read header: %w", err)
	}
	return Check(b[:], k, id)
}
