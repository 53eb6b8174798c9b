package heapkv

import (
	"errors"
	"testing"

	"github.com/heapkv/heapkv/internal/filehdr"
)

// The MIRROR marker's byte layout (mirrormark.go) round-trips, and every
// flipped bit, a cut or extended file and another database's marker are
// refused.
func TestMirrorMarkerFormat(t *testing.T) {
	id := filehdr.DBID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	b := encodeMirrorMarker(id, 7)
	if len(b) != 40 || string(b[:8]) != "HEAPKVMR" || b[32] != 7 {
		t.Fatalf("marker % x", b)
	}
	if r, err := decodeMirrorMarker(b, id); err != nil || r != 7 {
		t.Fatalf("decode: replica %d, %v", r, err)
	}
	for bit := range len(b) * 8 {
		c := append([]byte(nil), b...)
		c[bit/8] ^= 1 << (bit % 8)
		if r, err := decodeMirrorMarker(c, id); err == nil {
			t.Fatalf("bit %d flipped: accepted as replica %d", bit, r)
		}
	}
	for _, c := range [][]byte{b[:39], append(append([]byte(nil), b...), 0), nil} {
		if _, err := decodeMirrorMarker(c, id); err == nil {
			t.Fatalf("a marker of %d bytes was accepted", len(c))
		}
	}
	other := id
	other[0] ^= 0xff
	if _, err := decodeMirrorMarker(b, other); !errors.Is(err, filehdr.ErrBadHeader) {
		t.Fatalf("another database's marker: %v, want filehdr.ErrBadHeader", err)
	}
	heap := make([]byte, 40)
	filehdr.Header{Kind: filehdr.KindHeap, Version: filehdr.Version, DBID: id}.Encode(heap)
	if _, err := decodeMirrorMarker(heap, id); !errors.Is(err, filehdr.ErrBadHeader) {
		t.Fatalf("a heap header as a marker: %v, want filehdr.ErrBadHeader", err)
	}
}
