//go:build unix

package heapkv_test

import (
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/heapkv/heapkv"
)

// Every file and directory a database and its mirror create gets
// Options.FileMode (default 0600; directories 0700), whatever the umask
// grants: files written, renamed, preallocated, Pebble's tables and LOCK,
// the space reserve, the log's segments.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0o022)
	syscall.Umask(old)
	for _, tc := range []struct {
		opt        fs.FileMode
		file, dirs fs.FileMode
	}{
		{0, 0o600, 0o700},
		{0o640, 0o640, 0o750},
		{0o644, 0o644, 0o755},
	} {
		root := t.TempDir()
		dir, mirror := filepath.Join(root, "db"), filepath.Join(root, "m1")
		// Unsynced: 2,000 puts that would each wait for two disks.
		opts := &heapkv.Options{FileMode: tc.opt, Mirrors: []string{mirror}, NoSync: true, Logger: slog.New(slog.DiscardHandler)}
		db, err := heapkv.Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2000 {
			if err := db.Put([]byte{byte(i), byte(i >> 8)}, make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		files := 0
		for _, r := range []string{dir, mirror} {
			if err := filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				fi, err := d.Info()
				if err != nil {
					return err
				}
				want := tc.file
				if d.IsDir() {
					want = tc.dirs &^ fs.FileMode(old)
				} else {
					files++
				}
				if fi.Mode().Perm() != want {
					t.Errorf("FileMode %v: %s has mode %v, want %v", tc.opt, p, fi.Mode().Perm(), want)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		if files < 8 {
			t.Fatalf("only %d files checked", files)
		}
	}
	for _, bad := range []fs.FileMode{0o400, 0o1600, 0o200} {
		if _, err := heapkv.Open(t.TempDir(), &heapkv.Options{FileMode: bad}); !errors.Is(err, heapkv.ErrInvalidOptions) {
			t.Errorf("FileMode %v: %v, want ErrInvalidOptions", bad, err)
		}
	}
}
