package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/heapkv/heapkv/wal"
)

type rec struct {
	lsn, synced wal.LSN
	payload     []byte
}

// testRecords returns a few records of varied sizes, including an empty one.
func testRecords() []rec {
	return []rec{
		{1, 0, []byte("hello")},
		{2, 1, nil},
		{3, 1, bytes.Repeat([]byte{0xAB}, 300)},
		{4, 3, []byte{0}},
		{5, 3, []byte("the last record")},
	}
}

func encode(recs []rec) (buf []byte, starts []int) {
	for _, r := range recs {
		starts = append(starts, len(buf))
		buf = wal.AppendRecord(buf, r.lsn, r.synced, r.payload)
	}
	return buf, starts
}

// decodeAll decodes b with a Decoder and with DecodeRecord and checks that
// both agree; it returns the good records and the terminating error.
func decodeAll(t *testing.T, b []byte) ([]rec, error) {
	t.Helper()
	var got []rec
	d := wal.NewDecoder(bytes.NewReader(b))
	var derr error
	for {
		lsn, synced, p, err := d.Next()
		if err != nil {
			derr = err
			break
		}
		got = append(got, rec{lsn, synced, bytes.Clone(p)})
	}
	// The []byte decoder must see exactly the same.
	off := 0
	for i := 0; ; i++ {
		lsn, synced, p, n, err := wal.DecodeRecord(b[off:])
		if err != nil {
			if errors.Is(derr, io.EOF) != errors.Is(err, io.EOF) || errors.Is(derr, wal.ErrBadRecord) != errors.Is(err, wal.ErrBadRecord) {
				t.Fatalf("Decoder ended with %v, DecodeRecord with %v", derr, err)
			}
			if i != len(got) || int64(off) != d.Offset() {
				t.Fatalf("DecodeRecord stopped at record %d offset %d; Decoder at %d offset %d", i, off, len(got), d.Offset())
			}
			break
		}
		if i >= len(got) || got[i].lsn != lsn || got[i].synced != synced || !bytes.Equal(got[i].payload, p) {
			t.Fatalf("DecodeRecord record %d differs from Decoder's", i)
		}
		off += n
	}
	return got, derr
}

func TestFrameRoundTrip(t *testing.T) {
	recs := append(testRecords(), rec{6, 5, bytes.Repeat([]byte("x"), 70000)})
	var w bytes.Buffer
	for _, r := range recs {
		w.Write(wal.AppendRecord(nil, r.lsn, r.synced, r.payload))
	}
	got, err := decodeAll(t, w.Bytes())
	if err != io.EOF {
		t.Fatalf("end: got %v, want io.EOF", err)
	}
	if len(got) != len(recs) {
		t.Fatalf("got %d records, want %d", len(got), len(recs))
	}
	for i, r := range recs {
		if got[i].lsn != r.lsn || got[i].synced != r.synced || !bytes.Equal(got[i].payload, r.payload) {
			t.Errorf("record %d: got (%d,%d,%d bytes), want (%d,%d,%d bytes)", i,
				got[i].lsn, got[i].synced, len(got[i].payload), r.lsn, r.synced, len(r.payload))
		}
	}
	// A one-byte-at-a-time reader gives the same result.
	d := wal.NewDecoder(iotest.OneByteReader(bytes.NewReader(w.Bytes())))
	for i := range recs {
		if lsn, _, p, err := d.Next(); err != nil || lsn != recs[i].lsn || !bytes.Equal(p, recs[i].payload) {
			t.Fatalf("one-byte reader record %d: lsn %d err %v", i, lsn, err)
		}
	}
	if _, _, _, err := d.Next(); err != io.EOF {
		t.Fatalf("one-byte reader end: %v", err)
	}
}

// Every single-byte corruption of a multi-record buffer is detected as a
// bad record at the damaged record, after exactly the records before it.
func TestFrameEverySingleByteCorruption(t *testing.T) {
	recs := testRecords()
	buf, starts := encode(recs)
	for off := range buf {
		victim := 0
		for victim+1 < len(starts) && starts[victim+1] <= off {
			victim++
		}
		for _, mask := range []byte{0x01, 0x10, 0x80, 0xFF} {
			b := bytes.Clone(buf)
			b[off] ^= mask
			got, err := decodeAll(t, b)
			var re *wal.RecordError
			if !errors.As(err, &re) || !errors.Is(err, wal.ErrBadRecord) {
				t.Fatalf("flip %#x at %d: got error %v, want a bad record", mask, off, err)
			}
			if re.Offset != int64(starts[victim]) || len(got) != victim {
				t.Fatalf("flip %#x at %d: bad record at %d after %d records, want at %d after %d",
					mask, off, re.Offset, len(got), starts[victim], victim)
			}
			for i := range got {
				if got[i].lsn != recs[i].lsn || !bytes.Equal(got[i].payload, recs[i].payload) {
					t.Fatalf("flip %#x at %d: record %d decoded wrongly", mask, off, i)
				}
			}
		}
	}
}

// Every truncation point is a clean end at a record boundary and a bad
// record anywhere else.
func TestFrameEveryTruncation(t *testing.T) {
	recs := testRecords()
	buf, starts := encode(recs)
	end := func(i int) int {
		if i+1 < len(starts) {
			return starts[i+1]
		}
		return len(buf)
	}
	for cut := 0; cut <= len(buf); cut++ {
		whole := 0 // records that end at or before cut
		for whole < len(starts) && end(whole) <= cut {
			whole++
		}
		got, err := decodeAll(t, buf[:cut])
		if len(got) != whole {
			t.Fatalf("cut %d: %d records, want %d", cut, len(got), whole)
		}
		atBoundary := cut == 0 || cut == end(whole-1)
		switch {
		case atBoundary && err != io.EOF:
			t.Fatalf("cut %d at a boundary: %v, want io.EOF", cut, err)
		case !atBoundary && !errors.Is(err, wal.ErrBadRecord):
			t.Fatalf("cut %d inside a record: %v, want ErrBadRecord", cut, err)
		}
	}
}

func TestFrameZeroAndOversized(t *testing.T) {
	if _, err := decodeAll(t, make([]byte, 100)); !errors.Is(err, wal.ErrBadRecord) {
		t.Fatalf("zeros: %v", err)
	}
	if _, err := decodeAll(t, make([]byte, 5)); !errors.Is(err, wal.ErrBadRecord) {
		t.Fatalf("short zeros: %v", err)
	}
	// A header claiming more than MaxPayloadSize is bad, and one claiming
	// the maximum over a short stream does not allocate the maximum.
	for _, n := range []uint32{wal.MaxPayloadSize + 1, ^uint32(0), wal.MaxPayloadSize} {
		h := wal.AppendRecord(nil, 7, 6, nil)
		h[4], h[5], h[6], h[7] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		h = append(h, make([]byte, 1000)...)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		d := wal.NewDecoder(bytes.NewReader(h))
		_, _, _, err := d.Next()
		runtime.ReadMemStats(&after)
		if !errors.Is(err, wal.ErrBadRecord) {
			t.Fatalf("length %d: %v, want ErrBadRecord", n, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
			t.Fatalf("length %d: decoder allocated %d bytes", n, grew)
		}
	}
}

func TestDecoderIOError(t *testing.T) {
	buf, _ := encode(testRecords())
	boom := errors.New("boom")
	for _, cut := range []int{0, 3, 30, len(buf) - 1} {
		r := io.MultiReader(bytes.NewReader(buf[:cut]), iotest.ErrReader(boom))
		d := wal.NewDecoder(r)
		var err error
		for err == nil {
			_, _, _, err = d.Next()
		}
		if !errors.Is(err, boom) || errors.Is(err, wal.ErrBadRecord) || err == io.EOF {
			t.Fatalf("cut %d: %v, want the reader's error", cut, err)
		}
		if _, _, _, again := d.Next(); again != err {
			t.Fatalf("error not sticky: %v then %v", err, again)
		}
	}
}

func TestAppendRecordPanicsOnMisuse(t *testing.T) {
	for name, f := range map[string]func(){
		"lsn 0":         func() { wal.AppendRecord(nil, 0, 0, nil) },
		"synced >= lsn": func() { wal.AppendRecord(nil, 5, 5, nil) },
		"too large":     func() { wal.AppendRecord(nil, 5, 4, make([]byte, wal.MaxPayloadSize+1)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func FuzzDecodeRecord(f *testing.F) {
	buf, _ := encode(testRecords())
	f.Add(buf)
	f.Add(buf[:30])
	f.Add(make([]byte, 24))
	f.Add([]byte{})
	f.Add(wal.AppendRecord(nil, 1, 0, []byte("x")))
	f.Fuzz(func(t *testing.T, b []byte) {
		lsn, synced, p, n, err := wal.DecodeRecord(b)
		d := wal.NewDecoder(bytes.NewReader(b))
		dl, ds, dp, derr := d.Next()
		if (err == nil) != (derr == nil) {
			t.Fatalf("DecodeRecord: %v, Decoder: %v", err, derr)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, wal.ErrBadRecord) {
				t.Fatalf("unexpected error kind %v", err)
			}
			return
		}
		if dl != lsn || ds != synced || !bytes.Equal(dp, p) || d.Offset() != int64(n) {
			t.Fatalf("decoders disagree")
		}
		// A valid record re-encodes to exactly its bytes.
		if re := wal.AppendRecord(nil, lsn, synced, p); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// Salted frames round-trip, every single-byte corruption of one is a bad
// record, and a valid frame carrying another salt (a frame of an earlier
// use of a recycled file) is a bad record too, even with the right LSN.
func TestSaltedFrame(t *testing.T) {
	const salt, other = 0x0123456789abcdef, 0x0123456789abcdee
	for _, r := range testRecords() {
		b := wal.AppendSaltedRecord(nil, salt, r.lsn, r.synced, r.payload)
		if len(b) != wal.SaltedRecordHeaderSize+len(r.payload) {
			t.Fatalf("LSN %d: %d bytes", r.lsn, len(b))
		}
		lsn, synced, p, n, err := wal.DecodeSaltedRecord(append(bytes.Clone(b), 0, 0, 0), salt)
		if err != nil || lsn != r.lsn || synced != r.synced || !bytes.Equal(p, r.payload) || n != len(b) {
			t.Fatalf("LSN %d: decoded %d, %d, %d bytes, n %d, %v", r.lsn, lsn, synced, len(p), n, err)
		}
		if _, _, _, _, err := wal.DecodeSaltedRecord(b, other); !errors.Is(err, wal.ErrBadRecord) || !strings.Contains(err.Error(), "stale frame") {
			t.Fatalf("LSN %d with another salt: %v", r.lsn, err)
		}
		for off := range b {
			c := bytes.Clone(b)
			c[off] ^= 0x04
			if _, _, _, _, err := wal.DecodeSaltedRecord(c, salt); !errors.Is(err, wal.ErrBadRecord) {
				t.Fatalf("LSN %d, byte %d flipped: %v", r.lsn, off, err)
			}
		}
		// Rewriting a stale frame's salt field to the new salt does not
		// make it a record of the new use: the CRC covers the salt.
		c := bytes.Clone(b)
		binary.LittleEndian.PutUint64(c[24:], other)
		if _, _, _, _, err := wal.DecodeSaltedRecord(c, other); !errors.Is(err, wal.ErrBadRecord) || !strings.Contains(err.Error(), "checksum") {
			t.Fatalf("LSN %d with its salt field rewritten: %v", r.lsn, err)
		}
	}
	if _, _, _, _, err := wal.DecodeSaltedRecord(nil, salt); err != io.EOF {
		t.Fatalf("empty: %v", err)
	}
	if _, _, _, _, err := wal.DecodeSaltedRecord(make([]byte, 40), salt); !errors.Is(err, wal.ErrBadRecord) || !strings.Contains(err.Error(), "zero header") {
		t.Fatalf("zeros: %v", err)
	}
}
