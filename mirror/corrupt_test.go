package mirror

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// A replica file with a bad header is corruption at every level:
// mirror.ErrCorrupt, the shared base.ErrCorrupt and the cause
// (filehdr.ErrBadHeader, or the short read), naming the file.
func TestOpenBadHeaderIsCorrupt(t *testing.T) {
	if got := ErrCorrupt.Error(); got != "mirror: corrupt replica" {
		t.Fatalf("ErrCorrupt text %q", got)
	}
	f := newFixture(t, 2)
	f.mustWrite(0, 4, 1)
	f.set.Close()
	open := func() error {
		s, err := Open(f.config(), OpenOptions{Replicas: []ReplicaSpec{{Path: f.paths[0]}, {Path: f.paths[1]}}})
		if err == nil {
			s.Close()
		}
		return err
	}
	rewrite := func(b []byte) {
		t.Helper()
		file, err := f.mem.Create(f.paths[1], vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		if _, err := file.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, err error, causes ...error) {
		t.Helper()
		for _, target := range append([]error{ErrCorrupt, base.ErrCorrupt}, causes...) {
			if !errors.Is(err, target) {
				t.Errorf("%s: %v does not match %v", what, err, target)
			}
		}
		if err != nil && !strings.Contains(err.Error(), f.paths[1]) {
			t.Errorf("%s: %v does not name %s", what, err, f.paths[1])
		}
	}

	file, err := f.mem.Open(f.paths[1])
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, headerSize)
	_, err = file.ReadAt(hdr, 0)
	file.Close()
	if err != nil {
		t.Fatal(err)
	}

	bad := append([]byte(nil), hdr...)
	bad[filehdr.Size-1] ^= 0x40 // the file header's checksum
	rewrite(bad)
	check("bad file header", open(), filehdr.ErrBadHeader)

	rewrite(hdr[:10])
	check("short header", open(), io.EOF)
}
