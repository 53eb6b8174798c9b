package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// viewWindow is how much of a segment a view reads at a time.
const viewWindow = 1 << 20

// view reads a segment file a window at a time for Replay and
// ProvenDurable. A preallocated segment is mostly zeros or stale frames
// past its records, and the end check scans all of it (see endsAt): read
// whole, every Open held and copied SegmentSize bytes per segment, twice.
// A view holds one window of viewWindow bytes (or one record, if larger;
// or the whole file, if smaller) and scans with a second buffer of the
// same size.
//
// A slice returned by at is valid until the next call of at; index does
// not disturb it.
type view struct {
	f    vfs.File
	path string
	size int // the file's size when opened

	off  int    // file offset of win[0]
	win  []byte // bytes [off, off+len(win)) of the file
	scan []byte // index's buffer
}

// openView opens the file at path (read-only) for viewing.
func openView(fsys vfs.FS, path string) (*view, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wal: open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("wal: stat %s: %w", path, err)
	}
	return &view{f: f, path: path, size: int(st.Size())}, nil
}

// close closes the file.
func (v *view) close() error { return v.f.Close() }

// at returns the file's bytes from off on: at least n of them, or all up
// to the end of the file if fewer remain (possibly more than n, never
// past the end). off must be in [0, size].
func (v *view) at(off, n int) ([]byte, error) {
	n = min(n, v.size-off)
	if off >= v.off && off+n <= v.off+len(v.win) {
		return v.win[off-v.off:], nil
	}
	want := min(max(n, viewWindow), v.size-off)
	if cap(v.win) < want {
		v.win = make([]byte, want)
	}
	v.win = v.win[:want]
	if err := v.read(v.win, off); err != nil {
		v.win = v.win[:0]
		return nil, err
	}
	v.off = off
	return v.win, nil
}

// read fills b from the file at off (which the file's size covers).
func (v *view) read(b []byte, off int) error {
	m, err := v.f.ReadAt(b, int64(off))
	if m == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("wal: read %s (%d bytes at offset %d): %w", v.path, len(b), off, err)
}

// index returns the offset of the first occurrence of pat (at most 64
// bytes) at or after from, or -1 if there is none.
func (v *view) index(from int, pat []byte) (int, error) {
	if v.scan == nil {
		v.scan = make([]byte, max(min(viewWindow, v.size), 64))
	}
	for from+len(pat) <= v.size {
		b := v.scan[:min(len(v.scan), v.size-from)]
		if err := v.read(b, from); err != nil {
			return -1, err
		}
		if i := bytes.Index(b, pat); i >= 0 {
			return from + i, nil
		}
		if from+len(b) == v.size {
			break
		}
		// The next chunk starts len(pat)-1 bytes back, so an occurrence
		// across the border is found.
		from += len(b) - (len(pat) - 1)
	}
	return -1, nil
}
