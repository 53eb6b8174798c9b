package heapkv

import (
	"math"
	"testing"

	"github.com/heapkv/heapkv/alloc"
)

// BenchmarkDecodeEntry decodes the index entry a scan decodes for every heap
// value: one extent, as a 1,140-byte value written in one piece has, and
// three, as values in pieces have. Run:
//
//	go test -run '^$' -bench DecodeEntry -count 6 .
func BenchmarkDecodeEntry(b *testing.B) {
	g := alloc.Geometry{BlockSize: 128, SegmentBlocks: 1 << 16}
	for _, c := range []struct {
		name string
		p    pointer
	}{
		{"1extent", pointer{lsn: 123_456_789, rawLen: 1140, storedLen: 1140, crc: 0xDEADBEEF,
			extents: []alloc.Extent{{Start: 20_000_000, Len: 9}}}},
		{"3extents", pointer{lsn: 123_456_789, rawLen: 40000, storedLen: 40000, crc: 0xDEADBEEF,
			extents: []alloc.Extent{{Start: 20_000_000, Len: 100}, {Start: 20_100_000, Len: 100}, {Start: 20_200_000, Len: 113}}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			raw := appendHeapEntry(nil, &c.p)
			exts := make([]alloc.Extent, 0, 4)
			for b.Loop() {
				var e entry
				err := decodeEntryTo(&e, raw, g, exts)
				if err != nil || len(e.ptr.extents) != len(c.p.extents) {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDecodeEntryExtents checks the decoder's extent checks against
// alloc.Geometry.CheckExtent, which defines a valid extent: the decoder
// tests it inline, without CheckExtent's two divisions. Each pointer's
// stored length fills its extent's blocks, so only the extent can make the
// decode fail.
func TestDecodeEntryExtents(t *testing.T) {
	for _, seg := range []int{64, 192, 1 << 16} {
		g := alloc.Geometry{BlockSize: 128, SegmentBlocks: seg}
		s := uint64(seg)
		for _, x := range []alloc.Extent{
			{Start: 0, Len: 1}, {Start: 0, Len: uint32(seg)}, {Start: 0, Len: uint32(seg) + 1},
			{Start: s - 1, Len: 1}, {Start: s - 1, Len: 2}, {Start: s, Len: uint32(seg)},
			{Start: 5*s + 3, Len: uint32(seg) - 3}, {Start: 5*s + 3, Len: uint32(seg) - 2},
			{Start: 7, Len: 0}, {Start: math.MaxUint64, Len: 1}, {Start: math.MaxUint64 - 1, Len: 1},
			{Start: math.MaxUint64 - 63, Len: 64}, {Start: math.MaxUint64 - 64, Len: 64},
		} {
			n := uint64(x.Len) * 128
			p := pointer{lsn: 1, rawLen: max(n, 1), storedLen: max(n, 1), crc: 1, extents: []alloc.Extent{x}}
			var e entry
			err := decodeEntryTo(&e, appendHeapEntry(nil, &p), g, nil)
			want := g.CheckExtent(x)
			if (err == nil) != (want == nil) {
				t.Errorf("segments of %d blocks, extent %v: decode error %v, CheckExtent %v", seg, x, err, want)
			}
			if err == nil && (len(e.ptr.extents) != 1 || e.ptr.extents[0] != x) {
				t.Errorf("segments of %d blocks, extent %v: decoded %v", seg, x, e.ptr.extents)
			}
		}
	}
}
