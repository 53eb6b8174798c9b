package alloc_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"slices"
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
	eq(t, "HKAB", string(enc[:4]), "magic")
	eq(t, uint32(2), binary.LittleEndian.Uint32(enc[4:]), "version")
	eq(t, uint32(4096), binary.LittleEndian.Uint32(enc[8:]), "block size")
	eq(t, uint32(64), binary.LittleEndian.Uint32(enc[12:]), "segment blocks")
	eq(t, uint64(4), binary.LittleEndian.Uint64(enc[16:]), "segments")
	// Layout: 24-byte header; per 64-block segment (one word) a run: one
	// byte for a full or empty word, nine for a literal one; CRC.
	want := 24 + 4
	for seg := range 4 {
		switch n := allocatedIn(s, seg); n {
		case 0, 64:
			want++
		default:
			want += 9
		}
	}
	eq(t, want, len(enc), "encoded length")
	again, err := s.MarshalBinary()
	noErr(t, err)
	eq(t, enc, again, "re-encoding")

	// Version 1 (raw words), as databases made before version 2 have it,
	// decodes to the same snapshot.
	v1, err := alloc.UnmarshalSnapshot(rawEncoding(s))
	noErr(t, err)
	eq(t, snapRuns(s), snapRuns(v1), "version 1 decoding")

	empty, err := newAlloc(t, g, alloc.Config{}).Snapshot().MarshalBinary()
	noErr(t, err)
	s, err = alloc.UnmarshalSnapshot(empty)
	noErr(t, err)
	eq(t, 0, s.Segments(), "empty heap")
}

// TestSnapshotRunsCompress: a heap of 128-byte blocks whose segments are
// full, empty or half used encodes in a few bytes per segment, not one bit
// per block.
func TestSnapshotRunsCompress(t *testing.T) {
	g := alloc.Geometry{BlockSize: 128, SegmentBlocks: 1 << 16}
	a := newAlloc(t, g, alloc.Config{Cursors: 1})
	for range 10 {
		a.Publish(mustAllocate(t, a, g.SegmentBlocks))
	}
	a.Publish(mustAllocate(t, a, g.SegmentBlocks/2+3))
	s := a.Snapshot()
	enc, err := s.MarshalBinary()
	noErr(t, err)
	if len(enc) > 24+11*4+9+4 {
		t.Fatalf("11 segments of %d blocks, 10 full, encode in %d bytes", g.SegmentBlocks, len(enc))
	}
	back, err := alloc.UnmarshalSnapshot(enc)
	noErr(t, err)
	eq(t, snapRuns(s), snapRuns(back), "round trip")
	eq(t, int64(10*g.SegmentBlocks+g.SegmentBlocks/2+3), back.AllocatedBlocks(), "allocated blocks")
}

// allocatedIn counts the allocated blocks of segment seg of s.
func allocatedIn(s *alloc.Snapshot, seg int) int {
	n := 0
	sb := uint64(s.Geometry().SegmentBlocks)
	s.ForEachAllocated(func(e alloc.Extent) bool {
		if e.Start/sb == uint64(seg) {
			n += int(e.Len)
		}
		return true
	})
	return n
}

// snapRuns lists the allocated runs of s.
func snapRuns(s *alloc.Snapshot) []alloc.Extent {
	var out []alloc.Extent
	s.ForEachAllocated(func(e alloc.Extent) bool { out = append(out, e); return true })
	return out
}

// rawEncoding encodes s in version 1: header, raw words, CRC.
func rawEncoding(s *alloc.Snapshot) []byte {
	g := s.Geometry()
	wps := g.SegmentBlocks / 64
	words := make([]uint64, s.Segments()*wps)
	s.ForEachAllocated(func(e alloc.Extent) bool {
		for b := e.Start; b < e.End(); b++ {
			words[b/64] |= 1 << (b % 64)
		}
		return true
	})
	b := []byte("HKAB")
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(g.BlockSize))
	b = binary.LittleEndian.AppendUint32(b, uint32(g.SegmentBlocks))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Segments()))
	for _, w := range words {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return reseal(append(b, 0, 0, 0, 0))
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
		{"version 3", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], 3); return b }},
		{"block size", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 4000); return b }},
		{"huge block size", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 1<<31); return b }},
		{"segment blocks", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 100); return b }},
		{"zero segment blocks", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 0); return b }},
		{"segment blocks vs length", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 128); return b }},
		{"segments", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], 5); return b }},
		{"huge segments", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], 1<<62); return b }},
		{"max segments", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], ^uint64(0)); return b }},
		{"trailing byte", func(b []byte) []byte { return append(b[:len(b)-4], 0, 0, 0, 0, 0) }},
		{"segments vs runs", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[16:], 3); return b }},
		// The first segment's run (24) is rewritten.
		{"run kind 3", func(b []byte) []byte { b[24] |= 3; return b }},
		{"empty run", func(b []byte) []byte { b[24] &= 3; return b }},
		{"run longer than its segment", func(b []byte) []byte { b[24] += 4; return b }},
		{"overlong run header", func(b []byte) []byte { b[24] |= 0x80; return b }},
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
// restores and re-encodes (as version 2) to bytes that decode to the same
// snapshot. (The bytes may differ: the input may be version 1, or version 2
// with runs split where MarshalBinary would not split them.)
func FuzzUnmarshalSnapshot(f *testing.F) {
	f.Add(sampleEncoding(f, small))
	f.Add(sampleEncoding(f, alloc.Geometry{BlockSize: 512, SegmentBlocks: 128}))
	empty, _ := newAlloc(f, small, alloc.Config{}).Snapshot().MarshalBinary()
	f.Add(empty)
	f.Add([]byte{})
	f.Add([]byte("HKAB"))
	f.Add([]byte("HKAB\x01\x00\x00\x00junkjunkjunkjunkjunkjunkjunkjunk"))
	f.Add(reseal(bytes.Repeat([]byte{0xff}, 40)))
	s, _ := alloc.UnmarshalSnapshot(sampleEncoding(f, small))
	f.Add(rawEncoding(s))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := alloc.UnmarshalSnapshot(b)
		if err != nil {
			wantErr(t, err, alloc.ErrCorrupt, "decode")
			return
		}
		again, err := s.MarshalBinary()
		noErr(t, err)
		back, err := alloc.UnmarshalSnapshot(again)
		noErr(t, err)
		if !slices.Equal(snapRuns(s), snapRuns(back)) || back.Segments() != s.Segments() {
			t.Fatalf("re-encoding decodes to another snapshot")
		}
		a, err := alloc.Restore(s, alloc.Config{Cursors: 1})
		noErr(t, err)
		eq(t, s.AllocatedBlocks(), a.Stats().AllocatedBlocks, "restored allocation")
	})
}
