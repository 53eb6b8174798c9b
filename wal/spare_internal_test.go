package wal

import (
	"errors"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// writeBackCall is one call of writeBackZeros, with the file's size when
// it was made.
type writeBackCall struct {
	off, n, size int64
}

// recordWriteBacks replaces writeBackZeros for the test with one that
// records its calls and returns fail(i) for the i-th (from 0).
func recordWriteBacks(t *testing.T, fail func(i int) error) *[]writeBackCall {
	t.Helper()
	var calls []writeBackCall
	old := writeBackZeros
	writeBackZeros = func(f vfs.File, off, n int64) error {
		st, err := f.Stat()
		if err != nil {
			t.Errorf("stat during write-back: %v", err)
			return err
		}
		calls = append(calls, writeBackCall{off, n, st.Size()})
		return fail(len(calls) - 1)
	}
	t.Cleanup(func() { writeBackZeros = old })
	return &calls
}

// A new spare's zeros are written back a chunk at a time, in file order,
// each chunk once it is written and before the next one is: the device
// never holds more than one chunk of them ahead of a log flush.
func TestPrepareSpareWritesBackEachChunk(t *testing.T) {
	calls := recordWriteBacks(t, func(int) error { return nil })
	fs := vfs.NewMem()
	sp := spareFile{path: "000001.spare", size: 3*zeroChunk + 1000}
	if err := prepareSpare(Options{FS: fs}, sp, nil); err != nil {
		t.Fatal(err)
	}
	want := []writeBackCall{
		{0, zeroChunk, zeroChunk},
		{zeroChunk, zeroChunk, 2 * zeroChunk},
		{2 * zeroChunk, zeroChunk, 3 * zeroChunk},
		{3 * zeroChunk, 1000, 3*zeroChunk + 1000},
	}
	if len(*calls) != len(want) {
		t.Fatalf("write-back calls %+v, want %+v", *calls, want)
	}
	for i, c := range *calls {
		if c != want[i] {
			t.Fatalf("write-back call %d = %+v, want %+v (all: %+v)", i, c, want[i], *calls)
		}
	}
	st, err := fs.Stat(sp.path)
	if err != nil || st.Size() != sp.size {
		t.Fatalf("spare after preparation: %v, %v; want %d bytes", st, err, sp.size)
	}
}

// A write-back error fails the preparation (the fsync that follows would
// not report it again) and leaves no file behind.
func TestPrepareSpareWriteBackError(t *testing.T) {
	errIO := errors.New("injected write-back error")
	calls := recordWriteBacks(t, func(i int) error {
		if i == 1 {
			return errIO
		}
		return nil
	})
	fs := vfs.NewMem()
	sp := spareFile{path: "000001.spare", size: 4 * zeroChunk}
	err := prepareSpare(Options{FS: fs}, sp, nil)
	if !errors.Is(err, errIO) {
		t.Fatalf("prepareSpare = %v, want the write-back error", err)
	}
	if len(*calls) != 2 {
		t.Fatalf("%d write-back calls after an error at the second, want 2", len(*calls))
	}
	for _, name := range []string{sp.path, sp.path + ".tmp"} {
		if _, err := fs.Stat(name); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after a failed preparation: %v, want it absent", name, err)
		}
	}
}
