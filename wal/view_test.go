package wal

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// viewFile writes b to a new file of a MemFS and opens a view of it.
func viewFile(t *testing.T, fsys vfs.FS, b []byte) *view {
	t.Helper()
	f, err := fsys.Create("seg", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	// A copy: under the race detector Pebble's MemFS scrambles what it
	// was given to write (invariants.Enabled), and b is the test's model.
	if _, err := f.Write(bytes.Clone(b)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := openView(fsys, "seg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.close() })
	return v
}

// TestViewAt reads random ranges of a file of a few windows, some longer
// than a window, and compares them with the file.
func TestViewAt(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*viewWindow+12345)
	rand.NewChaCha8([32]byte{1}).Read(data)
	v := viewFile(t, vfs.NewMem(), data)
	for range 2000 {
		off := rng.IntN(len(data) + 1)
		n := rng.IntN(64)
		if rng.IntN(10) == 0 {
			n = rng.IntN(2 * viewWindow)
		}
		b, err := v.at(off, n)
		if err != nil {
			t.Fatal(err)
		}
		want := min(n, len(data)-off)
		if len(b) < want || off+len(b) > len(data) {
			t.Fatalf("at(%d, %d) returned %d bytes of a %d-byte file", off, n, len(b), len(data))
		}
		if !bytes.Equal(b, data[off:off+len(b)]) {
			t.Fatalf("at(%d, %d): bytes differ from the file's", off, n)
		}
	}
}

// TestViewIndex finds every occurrence of a pattern planted at random
// offsets, at chunk borders and across them, as bytes.Index on the whole
// file does.
func TestViewIndex(t *testing.T) {
	pat := []byte("SALTSALT")
	for seed := range uint64(8) {
		rng := rand.New(rand.NewPCG(seed, 3))
		data := make([]byte, 2*viewWindow+rng.IntN(viewWindow))
		spots := []int{0, viewWindow - 8, viewWindow - 7, viewWindow - 1, viewWindow, 2*viewWindow - 4, len(data) - 8}
		for range 5 {
			spots = append(spots, rng.IntN(len(data)-8))
		}
		for _, p := range spots[:1+rng.IntN(len(spots))] {
			copy(data[p:], pat)
		}
		v := viewFile(t, vfs.NewMem(), data)
		for from := 0; ; {
			got, err := v.index(from, pat)
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Index(data[from:], pat)
			if want >= 0 {
				want += from
			}
			if got != want {
				t.Fatalf("seed %d: index(%d) = %d, want %d", seed, from, got, want)
			}
			if got < 0 {
				break
			}
			from = got + 1
		}
	}
}

// TestViewReadError: a failed read is an error naming the file, not a
// short segment (which replay would take for a torn tail).
func TestViewReadError(t *testing.T) {
	mem := vfs.NewMem()
	tog := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpFileReadAt {
			return errorfs.ErrInjected
		}
		return nil
	})}
	v := viewFile(t, errorfs.Wrap(mem, tog), make([]byte, 2*viewWindow))
	tog.On()
	if _, err := v.at(100, 10); !errors.Is(err, errorfs.ErrInjected) || !strings.Contains(err.Error(), "seg") {
		t.Fatalf("at: %v, want the injected error naming the file", err)
	}
	if _, err := v.index(0, []byte("x")); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("index: %v, want the injected error", err)
	}
}
