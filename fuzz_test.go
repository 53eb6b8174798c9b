package heapkv

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"reflect"
	"testing"

	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// Fuzz targets for the decoders of bytes read from disk: index entries (from
// Pebble and from log records), log record payloads, and MANIFESTs. Each
// must never panic, and whatever it accepts must survive re-encoding: the
// re-encoded bytes decode to the same value, and they equal the input
// unless the input spelled a varint in more bytes than needed (the only
// freedom the formats allow), in which case they are shorter. The seed
// corpora run under plain `go test`; explore with e.g.
//
//	go test -run '^$' -fuzz FuzzDecodeEntry -fuzztime 60s .

// fuzzGeometry maps two fuzzed bytes to a valid heap geometry.
func fuzzGeometry(bs, seg uint8) (blockSize, segBlocks int) {
	return alloc.MinBlockSize << (bs % 14), 64 * (1 + int(seg%64))
}

func entrySeeds() [][]byte {
	p := pointer{codec: CodecNone, lsn: 7, rawLen: 5000, storedLen: 5000, crc: 0xDEADBEEF,
		extents: []alloc.Extent{{Start: 3, Len: 1}, {Start: 64, Len: 1}}}
	big := pointer{codec: CodecNone, lsn: 1 << 40, rawLen: 70000, storedLen: 70000, crc: 1,
		extents: []alloc.Extent{{Start: 1<<20 + 1, Len: 18}}}
	small := pointer{codec: CodecNone, lsn: 1, rawLen: 1000, storedLen: 1000, crc: 5,
		extents: []alloc.Extent{{Start: 3, Len: 1}, {Start: 64, Len: 1}}}
	return [][]byte{
		appendHeapEntry(nil, &small),
		appendInlineEntry(nil, nil),
		appendInlineEntry(nil, []byte("hello")),
		appendHeapEntry(nil, &p),
		appendHeapEntry(nil, &big),
		{entryHeap},
		{entryHeap, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},
		{0xFF, 1, 2, 3},
	}
}

func FuzzDecodeEntry(f *testing.F) {
	for _, s := range entrySeeds() {
		f.Add(s, uint8(0), uint8(0)) // 128-byte blocks, 64 per segment
		f.Add(s, uint8(5), uint8(1)) // 4 KiB blocks, 128 per segment
	}
	f.Fuzz(func(t *testing.T, b []byte, bsSel, segSel uint8) {
		bs, seg := fuzzGeometry(bsSel, segSel)
		in := append([]byte(nil), b...)
		e, err := decodeEntry(b, alloc.Geometry{BlockSize: bs, SegmentBlocks: seg})
		if !bytes.Equal(in, b) {
			t.Fatal("decodeEntry modified its input")
		}
		if err != nil {
			return
		}
		if !e.isHeap {
			if got := appendInlineEntry(nil, e.inline); !bytes.Equal(got, b) {
				t.Fatalf("inline entry re-encodes to %x, input %x", got, b)
			}
			return
		}
		// What decodeEntry promises about a pointer it accepts.
		p := &e.ptr
		if p.storedLen == 0 || p.storedLen > MaxValueSize || p.rawLen > MaxValueSize {
			t.Fatalf("accepted lengths raw %d stored %d", p.rawLen, p.storedLen)
		}
		var blocks uint64
		for _, x := range p.extents {
			if x.Len == 0 || x.Start/uint64(seg) != (x.Start+uint64(x.Len)-1)/uint64(seg) {
				t.Fatalf("accepted extent %v with %d-block segments", x, seg)
			}
			blocks += uint64(x.Len)
		}
		if want := (p.storedLen + uint64(bs) - 1) / uint64(bs); blocks != want {
			t.Fatalf("accepted %d blocks for %d bytes of %d-byte blocks", blocks, p.storedLen, bs)
		}
		enc := appendHeapEntry(nil, p)
		e2, err := decodeEntry(enc, alloc.Geometry{BlockSize: bs, SegmentBlocks: seg})
		if err != nil {
			t.Fatalf("re-encoded entry %x does not decode: %v (input %x)", enc, err, b)
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip changed the entry:\n%+v\n%+v", e, e2)
		}
		checkCanonical(t, "entry", enc, b)
	})
}

// checkCanonical checks re-encoded bytes against the input they came from:
// equal, or shorter where the input spelled a varint with a redundant final
// 0x00 byte (binary.Uvarint accepts that; a decoder that ignored bytes, such
// as trailing ones, would show here as a shorter re-encoding without one).
func checkCanonical(t *testing.T, what string, enc, in []byte) {
	t.Helper()
	if bytes.Equal(enc, in) || (len(enc) < len(in) && hasOverlongVarint(in)) {
		return
	}
	t.Fatalf("%s re-encodes to %d bytes %x, input was %d bytes %x", what, len(enc), enc, len(in), in)
}

// hasOverlongVarint reports whether b holds a byte with the continuation bit
// followed by 0x00, which ends every overlong varint.
func hasOverlongVarint(b []byte) bool {
	for i := 0; i+1 < len(b); i++ {
		if b[i]&0x80 != 0 && b[i+1] == 0 {
			return true
		}
	}
	return false
}

func recordSeeds() [][]byte {
	p := pointer{codec: CodecNone, lsn: 9, rawLen: 600, storedLen: 600, crc: 42,
		extents: []alloc.Extent{{Start: 10, Len: 2}}}
	return [][]byte{
		appendRecord(nil, []logOp{{kind: opPut, key: []byte("k"), entry: appendInlineEntry(nil, []byte("v"))}}),
		appendRecord(nil, []logOp{
			{kind: opPut, key: []byte("a"), entry: appendHeapEntry(nil, &p), oldKind: keyHeap, oldRaw: 700, oldStored: 700,
				freed: []alloc.Extent{{Start: 1, Len: 1}, {Start: 70, Len: 1}}},
			{kind: opDelete, key: []byte("b"), oldKind: keyInline, oldRaw: 3},
			{kind: opPut, key: bytes.Repeat([]byte("x"), 300), entry: appendInlineEntry(nil, nil)},
		}),
		{recordVersion, 0},
		{recordVersion, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F},
		{2, 1, opPut, 1, 'k', 1, entryInline, 0, 0, 0, 0},
		{},
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, s := range recordSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		ops, err := decodeRecord(b)
		if !bytes.Equal(in, b) {
			t.Fatal("decodeRecord modified its input")
		}
		if err != nil {
			return
		}
		if len(ops) == 0 && !bytes.Equal(b, appendRecord(nil, nil)) {
			t.Fatalf("accepted a record with no ops that is not the canonical vouch record: %x", b)
		}
		for i, op := range ops {
			if (op.kind != opPut && op.kind != opDelete) || len(op.key) == 0 || len(op.key) > MaxKeySize ||
				(op.kind == opPut) != (len(op.entry) > 0) || op.oldKind > keyHeap ||
				(op.oldKind == keyHeap) != (len(op.freed) > 0) {
				t.Fatalf("accepted op %d: %+v", i, op)
			}
			for _, x := range op.freed {
				if x.Len == 0 {
					t.Fatalf("accepted op %d freeing an empty extent", i)
				}
			}
		}
		enc := appendRecord(nil, ops)
		ops2, err := decodeRecord(enc)
		if err != nil {
			t.Fatalf("re-encoded record %x does not decode: %v (input %x)", enc, err, b)
		}
		if !reflect.DeepEqual(ops, ops2) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", ops, ops2)
		}
		checkCanonical(t, "record", enc, b)
	})
}

var fuzzDBID = filehdr.DBID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

// Ways FuzzDecodeManifest builds its input from the fuzzed bytes.
const (
	manifestRaw     = iota // the bytes as they are
	manifestFixCRC         // with the trailing body checksum made right
	manifestAddHead        // the bytes are a body: add a valid header and checksum
	manifestModes
)

func FuzzDecodeManifest(f *testing.F) {
	ms := []manifest{
		{seq: 1, blockSize: 4096, segmentBlocks: 2048, replicas: []string{heapFileName}},
		{seq: 77, checkpointLSN: 1 << 50, blockSize: 512, segmentBlocks: 64,
			counters: counters{keys: 3, inlineBytes: 10, heapRawBytes: 9000, heapStoredBytes: 8000},
			replicas: []string{heapFileName, "mirror1/heap", ""}},
	}
	for _, m := range ms {
		enc := m.encode(fuzzDBID)
		f.Add(enc, uint8(manifestRaw))
		f.Add(enc[:len(enc)-5], uint8(manifestFixCRC))
		f.Add(enc[filehdr.Size:len(enc)-4], uint8(manifestAddHead))
	}
	f.Add([]byte("HEAPKV"), uint8(manifestRaw))
	f.Add(make([]byte, 60), uint8(manifestFixCRC))
	f.Fuzz(func(t *testing.T, b []byte, mode uint8) {
		switch mode % manifestModes {
		case manifestFixCRC:
			if len(b) >= filehdr.Size+4 {
				b = append([]byte(nil), b...)
				body := b[filehdr.Size : len(b)-4]
				binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(body, castagnoli))
			}
		case manifestAddHead:
			h := make([]byte, filehdr.Size, filehdr.Size+len(b)+4)
			filehdr.Header{Kind: filehdr.KindManifest, Version: filehdr.Version, DBID: fuzzDBID}.Encode(h)
			b = binary.LittleEndian.AppendUint32(append(h, b...), crc32.Checksum(b, castagnoli))
		}
		in := append([]byte(nil), b...)
		m, id, err := decodeManifest(b, filehdr.DBID{})
		if !bytes.Equal(in, b) {
			t.Fatal("decodeManifest modified its input")
		}
		if err != nil {
			return
		}
		if _, _, err := decodeManifest(b, id); err != nil {
			t.Fatalf("decodes, but not when its own database ID is expected: %v", err)
		}
		other := id
		other[0] ^= 1
		if _, _, err := decodeManifest(b, other); err == nil {
			t.Fatal("decodes although another database ID is expected")
		}
		if len(m.replicas) == 0 || m.blockSize < 512 || m.blockSize&(m.blockSize-1) != 0 ||
			m.segmentBlocks == 0 || m.segmentBlocks%64 != 0 {
			t.Fatalf("accepted %+v", m)
		}
		enc := m.encode(id)
		m2, id2, err := decodeManifest(enc, id)
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v", err)
		}
		if id2 != id || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
		}
		// The header's version may be any the build reads; the encoder
		// writes the current one. Compare the rest.
		if !bytes.Equal(enc[:8], b[:8]) || !bytes.Equal(enc[12:28], b[12:28]) {
			t.Fatalf("header re-encodes to %x, input %x", enc[:filehdr.Size], b[:filehdr.Size])
		}
		checkCanonical(t, "manifest body", enc[filehdr.Size:len(enc)-4], b[filehdr.Size:len(b)-4])
	})
}
