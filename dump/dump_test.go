package dump

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

var testLimits = Limits{MaxKey: 1 << 10, MaxValue: 1 << 16}

type kv struct {
	k, v string
	kept bool // a kept entry (incremental dumps)
}

func encode(t testing.TB, lsn uint64, kvs []kv) []byte {
	return encodeH(t, Header{LSN: lsn}, kvs)
}

func encodeH(t testing.TB, h Header, kvs []kv) []byte {
	var b bytes.Buffer
	w, err := NewWriter(&b, h.LSN)
	if h.Incremental {
		w, err = NewIncrementalWriter(&b, h.LSN, h.Since)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range kvs {
		add := func() error { return w.Add([]byte(e.k), []byte(e.v)) }
		if e.kept {
			add = func() error { return w.Keep([]byte(e.k)) }
		}
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// decode reads a whole dump; it returns what it read before any error.
func decode(b []byte) (Header, []kv, error) {
	r, h, err := NewReader(bytes.NewReader(b), testLimits)
	if err != nil {
		return h, nil, err
	}
	var out []kv
	for {
		k, v, err := r.Next()
		if err == io.EOF {
			return h, out, nil
		}
		if err != nil {
			return h, out, err
		}
		if r.Kept() && v != nil {
			return h, out, fmt.Errorf("entry %q: Kept() %v with a value of %d bytes", k, r.Kept(), len(v))
		}
		out = append(out, kv{string(k), string(v), r.Kept()})
	}
}

func sample() []kv {
	var kvs []kv
	for i := range 50 {
		kvs = append(kvs, kv{k: fmt.Sprintf("key%03d", i), v: string(bytes.Repeat([]byte{byte(i)}, i*37%300))})
	}
	return kvs
}

// A dump reads back as written.
func TestRoundTrip(t *testing.T) {
	for _, kvs := range [][]kv{nil, sample()} {
		h, got, err := decode(encode(t, 42, kvs))
		if err != nil || h.LSN != 42 || h.Version != Version || len(got) != len(kvs) {
			t.Fatalf("%v %+v: %d entries of %d", err, h, len(got), len(kvs))
		}
		for i := range got {
			if got[i] != kvs[i] {
				t.Fatalf("entry %d: %+v, want %+v", i, got[i], kvs[i])
			}
		}
	}
}

// sampleIncrement is sample with every third entry kept.
func sampleIncrement() []kv {
	kvs := sample()
	for i := range kvs {
		if i%3 == 0 {
			kvs[i] = kv{k: kvs[i].k, kept: true}
		}
	}
	return kvs
}

// An incremental dump reads back as written, kept entries and all; a full
// dump has no kept entries, and a Writer for one refuses them.
func TestIncrementalRoundTrip(t *testing.T) {
	want := sampleIncrement()
	h, got, err := decode(encodeH(t, Header{LSN: 90, Incremental: true, Since: 40}, want))
	if err != nil || !h.Incremental || h.Since != 40 || h.LSN != 90 || len(got) != len(want) {
		t.Fatalf("%v %+v: %d entries of %d", err, h, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	w, err := NewWriter(io.Discard, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Keep([]byte("k")); err == nil {
		t.Fatal("Keep on a full dump accepted")
	}
	if _, _, err := decode(encodeH(t, Header{LSN: 1, Incremental: true, Since: 2}, nil)); !errors.Is(err, ErrFormat) {
		t.Fatalf("an increment that ends before it begins: %v", err)
	}
}

// Every damage is found: each byte flipped, the dump cut at every length,
// a byte appended. Always an error wrapping ErrFormat, never a panic.
func TestDamageIsFound(t *testing.T) {
	for _, good := range [][]byte{
		encode(t, 7, sample()[:8]),
		encodeH(t, Header{LSN: 9, Incremental: true, Since: 3}, sampleIncrement()[:8]),
	} {
		damage(t, good)
	}
}

func damage(t *testing.T, good []byte) {
	for i := range good {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(good)
			b[i] ^= bit
			if _, _, err := decode(b); !errors.Is(err, ErrFormat) {
				t.Fatalf("byte %d ^ %#x: %v", i, bit, err)
			}
		}
	}
	for n := range len(good) {
		if _, _, err := decode(good[:n]); !errors.Is(err, ErrFormat) {
			t.Fatalf("cut to %d bytes: %v", n, err)
		}
	}
	if _, _, err := decode(append(bytes.Clone(good), 0)); !errors.Is(err, ErrFormat) {
		t.Fatalf("a byte appended: %v", err)
	}
}

// The Writer refuses keys out of order, empty or repeated.
func TestWriterOrder(t *testing.T) {
	w, err := NewWriter(io.Discard, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add([]byte("b"), nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", ""} {
		if err := w.Add([]byte(k), nil); err == nil {
			t.Fatalf("key %q after \"b\" accepted", k)
		}
	}
}

// Any input: no panic; an input read to the end without error is a
// canonical dump: writing its entries again gives the same bytes.
func FuzzReader(f *testing.F) {
	f.Add(encode(f, 1, sample()[:3]))
	f.Add(encode(f, 0, nil))
	f.Add(encodeH(f, Header{LSN: 5, Incremental: true, Since: 2}, sampleIncrement()[:4]))
	f.Add([]byte("HEAPKVDM"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, kvs, err := decode(b)
		if err != nil {
			return
		}
		if again := encodeH(t, h, kvs); !bytes.Equal(again, b) {
			t.Fatalf("a dump read without error is not what writing its entries gives")
		}
	})
}
