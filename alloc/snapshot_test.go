package alloc_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/heapkv/heapkv/alloc"
)

// sampleEncoding returns the encoding of a snapshot of a small heap with
// published, unpublished and freed claims. One cursor makes the layout
// deterministic (with several, Allocate starts at a random cursor): on 64-block
// segments the claims fill exactly four segments.
func sampleEncoding(t testing.TB, g alloc.Geometry) []byte {
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	for i, n := range []int{3, 70, 1, 9, 200} {
		c := mustAllocate(t, a, n)
		if i != 3 {
			a.Publish(c)
		}
		if i == 1 {
			a.Free(c.Extents[0])
		}
	}
	enc, err := a.Snapshot().MarshalBinary()
	noErr(t, err)
	return enc
}

// reseal recomputes the trailing CRC of a hand-edited encoding.
func reseal(b []byte) []byte {
	b = bytes.Clone(b)
	n := len(b) - 4
	binary.LittleEndian.PutUint32(b[n:], crc32.Checksum(b[:n], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func TestSnapshotEncoding(t *testing.T) {
	g := small
	enc := sampleEncoding(t, g)
	s, err := alloc.UnmarshalSnapshot(enc)
	noErr(t, err)
	eq(t, 4, s.Segments(), "segments")
	// Layout: 24-byte header, one 8-byte word per 64-block segment, CRC.
	eq(t, 24+4*8+4, len(enc), "encoded length")
	eq(t, "HKAB", string(enc[:4]), "magic")
	eq(t, uint32(1), binary.LittleEndian.Uint32(enc[4:]), "version")
	eq(t, uint32(4096), binary.LittleEndian.Uint32(enc[8:]), "block size")
	eq(t, uint32(64), binary.LittleEndian.Uint32(enc[12:]), "segment blocks")
	eq(t, uint64(4), binary.LittleEndian.Uint64(enc[16:]), "segments")
	again, err := s.MarshalBinary()
	noErr(t, err)
	eq(t, enc, again, "re-encoding")

	empty, err := newAlloc(t, g, alloc.Config{}).Snapshot().MarshalBinary()
	noErr(t, err)
	s, err = alloc.UnmarshalSnapshot(empty)
	noErr(t, err)
	eq(t, 0, s.Segments(), "empty heap")
}

func TestUnmarshalSnapshotTruncated(t *testing.T) {
	enc := sampleEncoding(t, small)
	for n := range len(enc) {
		_, err := alloc.UnmarshalSnapshot(enc[:n])
		wantErr(t, err, alloc.ErrCorrupt, "truncated to %d bytes", n)
	}
	_, err := alloc.UnmarshalSnapshot(append(bytes.Clone(enc), 0))
	wantErr(t, err, alloc.ErrCorrupt, "one byte too many")
}

func TestUnmarshalSnapshotBitFlips(t *testing.T) {
	enc := sampleEncoding(t, small)
	for i := range len(enc) * 8 {
		b := bytes.Clone(enc)
		b[i/8] ^= 1 << (i % 8)
		_, err := alloc.UnmarshalSnapshot(b)
		wantErr(t, err, alloc.ErrCorrupt, "bit %d flipped", i)
	}
}

// TestUnmarshalSnapshotBadFields edits one field at a time and fixes the CRC,
// so that the field checks themselves are exercised.
func TestUnmarshalSnapshotBadFields(t *testing.T) {
	enc := sampleEncoding(t, small)
	for _, tc := range []struct {
		what string
		edit func(b []byte) []byte
	}{
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }},
		{"version 0", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], 0); return b }},
		{"version 2", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], 2); return b }},
		{"block size", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 4000); return b }},
		{"huge block size", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 1<<31); return b }},
		{"segment blocks", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 100); return b }},
		{"zero segment blocks", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 0); return b }},
		{"segment blocks vs length", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 128); return b }},
		{"segments", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], 5); return b }},
		{"huge segments", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], 1<<62); return b }},
		{"max segments", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], ^uint64(0)); return b }},
		{"odd length", func(b []byte) []byte { return append(b[:len(b)-4], 0, 0, 0, 0, 0) }},
	} {
		_, err := alloc.UnmarshalSnapshot(reseal(tc.edit(bytes.Clone(enc))))
		wantErr(t, err, alloc.ErrCorrupt, "%s", tc.what)
		t.Logf("%s: %v", tc.what, err)
	}
}

func TestRestoreLimits(t *testing.T) {
	s, err := alloc.UnmarshalSnapshot(sampleEncoding(t, small))
	noErr(t, err)
	_, err = alloc.Restore(s, alloc.Config{MaxSegments: 3})
	wantErr(t, err, alloc.ErrInvalid, "restore 4 segments with a maximum of 3")
	_, err = alloc.Restore(s, alloc.Config{Cursors: -2})
	wantErr(t, err, alloc.ErrInvalid, "bad config")
	a, err := alloc.Restore(s, alloc.Config{MaxSegments: 4})
	noErr(t, err)
	// The snapshot is untouched by use of the restored allocator.
	before := s.AllocatedBlocks()
	a.Publish(mustAllocate(t, a, 20))
	eq(t, before, s.AllocatedBlocks(), "snapshot after allocating from its restore")
}

// FuzzUnmarshalSnapshot checks that UnmarshalSnapshot never panics, that it
// reports every failure as ErrCorrupt, and that whatever it accepts
// re-encodes to the same bytes and restores.
func FuzzUnmarshalSnapshot(f *testing.F) {
	f.Add(sampleEncoding(f, small))
	f.Add(sampleEncoding(f, alloc.Geometry{BlockSize: 512, SegmentBlocks: 128}))
	empty, _ := newAlloc(f, small, alloc.Config{}).Snapshot().MarshalBinary()
	f.Add(empty)
	f.Add([]byte{})
	f.Add([]byte("HKAB"))
	f.Add([]byte("HKAB\x01\x00\x00\x00junkjunkjunkjunkjunkjunkjunkjunk"))
	f.Add(reseal(bytes.Repeat([]byte{0xff}, 40)))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := alloc.UnmarshalSnapshot(b)
		if err != nil {
			wantErr(t, err, alloc.ErrCorrupt, "decode")
			return
		}
		again, err := s.MarshalBinary()
		noErr(t, err)
		if !bytes.Equal(b, again) {
			t.Fatalf("re-encoding differs")
		}
		a, err := alloc.Restore(s, alloc.Config{Cursors: 1})
		noErr(t, err)
		eq(t, s.AllocatedBlocks(), a.Stats().AllocatedBlocks, "restored allocation")
	})
}
