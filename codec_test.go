package heapkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/alloc"
)

// textValue returns n bytes of text-like data (words from a small
// vocabulary): compresses about 3-4x with s2, more with zstd.
func textValue(r *rand.Rand, n int) []byte {
	words := strings.Fields("the quick brown fox jumps over a lazy dog while heap blocks " +
		"hold values and the index holds keys pointers codecs cache lsn extent segment " +
		"writer cursor bitmap replica mirror resync checkpoint recovery")
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteString(".\n")
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

func randomValue(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const bs = 4096
	type input struct {
		name string
		data []byte
	}
	var inputs []input
	for _, n := range []int{1, 100, 4095, 4096, 4097, 8192, 8193, 12000, 100000, 1 << 20} {
		inputs = append(inputs,
			input{fmt.Sprintf("text-%d", n), textValue(r, n)},
			input{fmt.Sprintf("random-%d", n), randomValue(r, n)},
			input{fmt.Sprintf("zeros-%d", n), make([]byte, n)})
	}
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		for _, level := range []int{0, 1, 2, 3, 9, 19} {
			enc, err := newEncoder(codec, level)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range inputs {
				stored, got, done := enc.encode(in.data, bs)
				rawBlocks := (len(in.data) + bs - 1) / bs
				storedBlocks := (len(stored) + bs - 1) / bs
				switch {
				case got == CodecNone:
					if !bytes.Equal(stored, in.data) {
						t.Fatalf("%v/%d %s: stored as is but bytes differ", codec, level, in.name)
					}
				case got != codec:
					t.Fatalf("%v/%d %s: encoded with %v", codec, level, in.name, got)
				case storedBlocks >= rawBlocks:
					t.Fatalf("%v/%d %s: compressed to %d blocks, value has %d", codec, level, in.name, storedBlocks, rawBlocks)
				}
				if strings.HasPrefix(in.name, "random") && got != CodecNone {
					t.Fatalf("%v/%d %s: random data compressed", codec, level, in.name)
				}
				if !strings.HasPrefix(in.name, "random") && rawBlocks > 1 && got == CodecNone {
					t.Fatalf("%v/%d %s: compressible %d-block value stored as is", codec, level, in.name, rawBlocks)
				}
				if rawBlocks <= 1 && got != CodecNone {
					t.Fatalf("%v/%d %s: a one-block value cannot save a block", codec, level, in.name)
				}
				dec, err := decodeValue(got, uint64(len(in.data)), stored)
				if err != nil {
					t.Fatalf("%v/%d %s: decode: %v", codec, level, in.name, err)
				}
				if !bytes.Equal(dec, in.data) {
					t.Fatalf("%v/%d %s: round trip changed the value", codec, level, in.name)
				}
				done()
			}
		}
	}
	if e, err := newEncoder(CodecNone, 0); e != nil || err != nil {
		t.Fatalf("CodecNone encoder = %v, %v; want nil, nil", e, err)
	}
	var none *encoder
	if stored, c, done := none.encode([]byte("abc"), bs); c != CodecNone || string(stored) != "abc" {
		t.Fatalf("nil encoder: %v %q", c, stored)
	} else {
		done()
	}
}

func TestParseCodec(t *testing.T) {
	for c := CodecNone; c.valid(); c++ {
		got, err := ParseCodec(c.String())
		if err != nil || got != c {
			t.Fatalf("ParseCodec(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseCodec("lz4"); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("ParseCodec(lz4): %v", err)
	}
	if s := Codec(9).String(); s != "codec(9)" {
		t.Fatalf("Codec(9).String() = %q", s)
	}
	for _, o := range []Options{{Compression: 3}, {Compression: CodecZstd, CompressionLevel: 23}, {CompressionLevel: -1}} {
		if _, err := o.withDefaults(); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("options %+v: %v, want ErrInvalidOptions", o, err)
		}
	}
}

// TestDecodeValueBad feeds damaged stored bytes to the decoders: every case
// is an error, never a panic, never more than rawLen bytes.
func TestDecodeValueBad(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	val := textValue(r, 20000)
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		enc, _ := newEncoder(codec, 0)
		stored, got, done := enc.encode(val, 4096)
		if got != codec {
			t.Fatalf("%v: not compressed", codec)
		}
		stored = append([]byte(nil), stored...)
		done()
		raw := uint64(len(val))
		cases := map[string]struct {
			raw    uint64
			stored []byte
		}{
			"empty":         {raw, nil},
			"truncated":     {raw, stored[:len(stored)/2]},
			"one byte":      {raw, stored[:1]},
			"rawLen short":  {raw - 1, stored},
			"rawLen long":   {raw + 1, stored},
			"rawLen huge":   {MaxValueSize + 1, stored},
			"trailing junk": {raw, append(append([]byte(nil), stored...), 1, 2, 3)},
		}
		for i := 0; i < 200; i++ {
			b := append([]byte(nil), stored...)
			for j := 0; j <= i%4; j++ {
				b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
			}
			cases[fmt.Sprintf("flip-%d", i)] = struct {
				raw    uint64
				stored []byte
			}{raw, b}
		}
		for name, c := range cases {
			out, err := decodeValue(codec, c.raw, c.stored)
			switch {
			case err == nil && uint64(len(out)) != c.raw:
				t.Fatalf("%v %s: decoded %d bytes, want %d", codec, name, len(out), c.raw)
			case err == nil && !strings.HasPrefix(name, "flip"):
				t.Fatalf("%v %s: decoded without error", codec, name)
			}
			// A flipped byte may still decode (to other bytes of the same
			// length, e.g. inside a literal): the CRC over the stored bytes,
			// checked before decoding, is what catches damage on disk.
		}
	}
	if _, err := decodeValue(Codec(7), 10, []byte("x")); err == nil {
		t.Fatal("unknown codec decoded")
	}
	if _, err := decodeValue(CodecNone, 2, []byte("x")); err == nil {
		t.Fatal("CodecNone with wrong length decoded")
	}
}

// FuzzDecodeValue fuzzes the read path of a heap value after the heap read:
// an index entry (decodeEntry) and the stored bytes it points at
// (decodeValue). Neither may panic; a value that decodes has exactly the
// pointer's raw length. The seeds (s2 and zstd values and damaged copies)
// run under plain `go test`; explore with
//
//	go test -run '^$' -fuzz FuzzDecodeValue -fuzztime 60s .
func FuzzDecodeValue(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		enc, _ := newEncoder(codec, 0)
		for _, n := range []int{600, 3000, 9000} {
			val := textValue(r, n)
			stored, got, done := enc.encode(val, 512)
			stored = append([]byte(nil), stored...)
			done()
			p := pointer{codec: got, lsn: 9, rawLen: uint64(n), storedLen: uint64(len(stored)), crc: crcOf(stored),
				extents: []alloc.Extent{{Start: 70, Len: uint32((len(stored) + 511) / 512)}}}
			entry := appendHeapEntry(nil, &p)
			f.Add(entry, stored)
			f.Add(entry, stored[:len(stored)-1])
			bad := append([]byte(nil), stored...)
			bad[len(bad)/2] ^= 0x40
			f.Add(entry, bad)
		}
	}
	// A zstd frame header announcing a huge content size.
	f.Add(appendHeapEntry(nil, &pointer{codec: CodecZstd, lsn: 1, rawLen: 1 << 20, storedLen: 12, crc: 0,
		extents: []alloc.Extent{{Start: 1, Len: 1}}}),
		[]byte{0x28, 0xb5, 0x2f, 0xfd, 0xe4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, entry, stored []byte) {
		e, err := decodeEntry(entry, alloc.Geometry{BlockSize: 512, SegmentBlocks: 64})
		if err != nil || !e.isHeap {
			return
		}
		p := &e.ptr
		if p.codec != CodecNone && p.storedLen >= p.rawLen {
			t.Fatalf("accepted a %v pointer storing %d bytes for %d", p.codec, p.storedLen, p.rawLen)
		}
		if p.rawLen > 1<<18 {
			return // bounded by MaxValueSize; keep the fuzzer fast
		}
		out, err := decodeValue(p.codec, p.rawLen, stored)
		if err == nil && uint64(len(out)) != p.rawLen {
			t.Fatalf("%v: decoded %d bytes, pointer says %d", p.codec, len(out), p.rawLen)
		}
	})
}

// memOptions returns options for a database on fs with small geometry.
func memOptions(fs vfs.FS, c Codec) *Options {
	return &Options{fs: fs, Compression: c, BlockSize: 512, SegmentSize: 64 * 512, InlineThreshold: 100,
		Logger: slog.New(slog.DiscardHandler)}
}

// TestCompressionMixedReopen writes values under every codec in turn,
// reopening in between, and reads all of them back under every codec.
func TestCompressionMixedReopen(t *testing.T) {
	fs := vfs.NewMem()
	r := rand.New(rand.NewPCG(7, 8))
	want := map[string][]byte{}
	steps := []struct {
		codec Codec
		level int
	}{{CodecNone, 0}, {CodecS2, 0}, {CodecZstd, 0}, {CodecS2, 3}, {CodecZstd, 19}, {CodecNone, 0}}
	var compressed int64
	for round, st := range steps {
		o := memOptions(fs, st.codec)
		o.CompressionLevel = st.level
		db := openTestDB(t, "db", o)
		// Everything written so far reads back.
		for k, v := range want {
			got, err := db.Get([]byte(k))
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("round %d (%v): key %s: %v", round, st.codec, k, err)
			}
		}
		for i := 0; i < 60; i++ {
			k := fmt.Sprintf("k%02d", r.IntN(120))
			var v []byte
			switch i % 3 {
			case 0:
				v = textValue(r, 200+r.IntN(5000))
			case 1:
				v = randomValue(r, 200+r.IntN(3000))
			default:
				if i%2 == 0 {
					if err := db.Delete([]byte(k)); err != nil {
						t.Fatal(err)
					}
					delete(want, k)
					continue
				}
				v = textValue(r, 50)
			}
			if err := db.Put([]byte(k), v); err != nil {
				t.Fatal(err)
			}
			want[k] = v
		}
		s, err := db.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.codec == CodecNone && s.HeapValuesCompressed != 0 {
			t.Fatalf("round %d: %d values compressed without a codec", round, s.HeapValuesCompressed)
		}
		if st.codec != CodecNone && s.HeapValuesCompressed == 0 {
			t.Fatalf("round %d: nothing compressed with %v", round, st.codec)
		}
		compressed += s.HeapValuesCompressed
		if s.HeapWrittenStored > s.HeapWrittenBytes || s.HeapStoredBytes > s.HeapValueBytes {
			t.Fatalf("round %d: stored more than written: %+v", round, s)
		}
		if _, err := db.Check(context.Background()); err != nil {
			t.Fatalf("round %d: check: %v", round, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db := openTestDB(t, "db", memOptions(fs, CodecNone))
	s, _ := db.Stats()
	if s.HeapStoredBytes >= s.HeapValueBytes {
		t.Fatalf("after %d compressed writes the heap stores %d bytes for %d", compressed, s.HeapStoredBytes, s.HeapValueBytes)
	}
	for k, v := range want {
		if got, err := db.Get([]byte(k)); err != nil || !bytes.Equal(got, v) {
			t.Fatalf("final: key %s: %v", k, err)
		}
	}
}

// heapPointer returns the pointer key's index entry holds.
func heapPointer(t *testing.T, db *DB, key string) pointer {
	t.Helper()
	raw, closer, err := db.index.Get([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	e, err := decodeEntry(raw, db.geom)
	if err != nil || !e.isHeap {
		t.Fatalf("key %s: entry %v, heap %v", key, err, e.isHeap)
	}
	return e.ptr
}

// TestCorruptCompressedValue damages compressed values two ways and expects
// ErrCorrupt naming the key from Get and a problem from Check, never a
// panic: bytes flipped in the heap file (caught by the CRC), and stored
// bytes replaced by garbage whose CRC the pointer is made to match (caught
// by the decoder).
func TestCorruptCompressedValue(t *testing.T) {
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			fs := vfs.NewMem()
			r := rand.New(rand.NewPCG(9, uint64(codec)))
			o := memOptions(fs, codec)
			o.ValueCacheSize = -1
			db := openTestDB(t, "db", o)
			vals := map[string][]byte{}
			for i := 0; i < 4; i++ {
				k := fmt.Sprintf("key-%d", i)
				vals[k] = textValue(r, 5000)
				if err := db.Put([]byte(k), vals[k]); err != nil {
					t.Fatal(err)
				}
			}
			// Key 0: flip a byte in the heap file, under the CRC.
			p := heapPointer(t, db, "key-0")
			if p.codec != codec {
				t.Fatalf("stored with %v", p.codec)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := fs.OpenReadWrite("db/heap", vfs.WriteCategoryUnspecified)
			if err != nil {
				t.Fatal(err)
			}
			off := int64(p.extents[0].Start+1)*int64(512) + 7 // block 0 of the file is its header
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x10
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			db = openTestDBNoCheck(t, "db", o)
			_, err = db.Get([]byte("key-0"))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"key-0"`) || !strings.Contains(err.Error(), "checksum") {
				t.Fatalf("flipped heap byte: Get = %v, want ErrCorrupt naming key-0 and the checksum", err)
			}

			// Key 1: garbage that passes the CRC reaches the decoder.
			p = heapPointer(t, db, "key-1")
			garbage := make([]byte, p.storedLen)
			copy(garbage, []byte{0x28, 0xb5, 0x2f, 0xfd}) // a zstd magic, to get past the first check
			for i := 4; i < len(garbage); i++ {
				garbage[i] = byte(r.Uint32())
			}
			if err := db.writeBlocks(garbage, p.extents[0].Start); err != nil {
				t.Fatal(err)
			}
			p.crc = crcOf(garbage)
			if err := db.index.Set([]byte("key-1"), appendHeapEntry(nil, &p), pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			_, err = db.Get([]byte("key-1"))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"key-1"`) || !strings.Contains(err.Error(), "does not decode") {
				t.Fatalf("garbage with a good CRC: Get = %v, want ErrCorrupt naming key-1 from the decoder", err)
			}
			rep, err := db.Check(context.Background())
			if !errors.Is(err, ErrCorrupt) || rep == nil || len(rep.Problems) < 2 {
				t.Fatalf("check: %v, report %+v", err, rep)
			}
			for _, k := range []string{"key-2", "key-3"} {
				if got, err := db.Get([]byte(k)); err != nil || !bytes.Equal(got, vals[k]) {
					t.Fatalf("undamaged %s: %v", k, err)
				}
			}
		})
	}
}

// TestIncompressibleSampling checks the sampling shortcut: random values are
// recognised without compressing them whole, a value that is compressible
// past its first bytes is still compressed, and small values are not sampled.
func TestIncompressibleSampling(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	scratch := new([]byte)
	mixed := append(randomValue(r, 24<<10), textValue(r, 40<<10)...) // random head, text from 3/8 on
	for _, tc := range []struct {
		name  string
		value []byte
		want  bool
	}{
		{"random 64 KiB", randomValue(r, 64<<10), true},
		{"random 16 KiB", randomValue(r, 16<<10), true},
		{"random 16 KiB - 1", randomValue(r, 16<<10-1), false}, // too small to sample
		{"text 16 KiB", textValue(r, 16<<10), false},
		{"zeros 1 MiB", make([]byte, 1<<20), false},
		{"random head, text body", mixed, false},
	} {
		if got := incompressible(tc.value, scratch); got != tc.want {
			t.Errorf("%s: incompressible = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		enc, err := newEncoder(codec, 0)
		if err != nil {
			t.Fatal(err)
		}
		stored, c, done := enc.encode(mixed, 4096)
		if c != codec || len(stored) >= len(mixed)-4096 {
			t.Errorf("%s: mixed value stored as %s in %d of %d bytes", codec, c, len(stored), len(mixed))
		}
		got, err := decodeValue(c, uint64(len(mixed)), stored)
		if err != nil || !bytes.Equal(got, mixed) {
			t.Errorf("%s: round trip of the mixed value: %v", codec, err)
		}
		done()
	}
}
