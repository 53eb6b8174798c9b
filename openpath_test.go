package heapkv_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

// Tests of what Open does with the path it is given: the errors of a path
// it cannot use (only a lock someone holds is ErrLocked), the LOCK file it
// leaves in a directory it refuses (none), and the directories it creates
// (the leaf only).

// wantOpenError fails the test unless err wraps want and is not ErrLocked.
func wantOpenError(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) || errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("%s: Open = %v; want an error wrapping %q that is not ErrLocked", what, err, want)
	}
	t.Logf("%s: %v", what, err)
}

// listDir returns the names in dir, sorted (nil if dir does not exist).
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// A path that is a regular file, or lies below one, is not a directory.
func TestOpenPathIsFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "notes")
	if err := os.WriteFile(file, []byte("not a database"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := heapkv.Open(file, nil)
	wantOpenError(t, "a regular file", err, syscall.ENOTDIR)
	_, err = heapkv.Open(filepath.Join(file, "db"), nil)
	wantOpenError(t, "below a regular file", err, syscall.ENOTDIR)
	if b, err := os.ReadFile(file); err != nil || string(b) != "not a database" {
		t.Fatalf("the file was changed: %q, %v", b, err)
	}
}

// A missing parent directory is an error naming it; Open creates nothing.
func TestOpenMissingParent(t *testing.T) {
	base := t.TempDir()
	for _, rel := range []string{"typo/db", "a/b/c/db"} {
		dir := filepath.Join(base, rel)
		_, err := heapkv.Open(dir, nil)
		wantOpenError(t, rel, err, fs.ErrNotExist)
		if parent := filepath.Dir(dir); !strings.Contains(err.Error(), parent) {
			t.Fatalf("%s: the error does not name the missing parent %s: %v", rel, parent, err)
		}
		if names := listDir(t, base); len(names) != 0 {
			t.Fatalf("%s: Open created %v in %s", rel, names, base)
		}
	}
	// The leaf alone is created (the shell's ./heapkv-data on a fresh
	// machine).
	dir := filepath.Join(base, "db")
	db := openTestDB(t, dir, nil)
	mustClose(t, db)
}

// A directory Open refuses keeps no LOCK that Open made; a LOCK that was
// there before stays.
func TestOpenRefusedLeavesNoLock(t *testing.T) {
	for _, name := range []string{"os", "mem"} {
		t.Run(name, func(t *testing.T) {
			dir, fsys := filepath.Join(t.TempDir(), "photos"), vfs.Default
			if name == "mem" {
				dir, fsys = "photos", vfs.NewMem()
			}
			if err := fsys.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, fsys, fsys.PathJoin(dir, "cat.jpg"), "meow")
			opts := &heapkv.Options{}
			heapkv.SetFS(opts, fsys)
			_, err := heapkv.Open(dir, opts)
			if !errors.Is(err, heapkv.ErrCorrupt) || !strings.Contains(err.Error(), "cat.jpg") {
				t.Fatalf("Open of a foreign directory = %v, want ErrCorrupt naming cat.jpg", err)
			}
			if names, _ := fsys.List(dir); !slices.Equal(names, []string{"cat.jpg"}) {
				t.Fatalf("the refused directory holds %v, want only cat.jpg", names)
			}
			// A LOCK that was there before Open is not Open's to remove.
			writeFile(t, fsys, fsys.PathJoin(dir, "LOCK"), "")
			if _, err = heapkv.Open(dir, opts); !errors.Is(err, heapkv.ErrCorrupt) {
				t.Fatalf("second Open: %v, want ErrCorrupt", err)
			}
			names, _ := fsys.List(dir)
			slices.Sort(names)
			if !slices.Equal(names, []string{"LOCK", "cat.jpg"}) {
				t.Fatalf("after refusing a directory with a LOCK: %v, want LOCK and cat.jpg", names)
			}
		})
	}
}

// A leaf directory that Open created for a database it then refused (here
// because a mirror directory holds a heap file) is removed again.
func TestOpenRefusedRemovesNewDir(t *testing.T) {
	base := t.TempDir()
	mirror := filepath.Join(base, "m1")
	if err := os.Mkdir(mirror, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, vfs.Default, filepath.Join(mirror, "heap"), "someone's heap")
	_, err := heapkv.Open(filepath.Join(base, "db"), &heapkv.Options{Mirrors: []string{mirror}})
	if !errors.Is(err, heapkv.ErrCorrupt) {
		t.Fatalf("Open with a mirror holding a heap file: %v, want ErrCorrupt", err)
	}
	if names := listDir(t, base); !slices.Equal(names, []string{"m1"}) {
		t.Fatalf("after the refused Open %s holds %v, want only m1", base, names)
	}
	if names := listDir(t, mirror); !slices.Equal(names, []string{"heap"}) {
		t.Fatalf("after the refused Open the mirror holds %v, want only heap", names)
	}
}

func writeFile(t *testing.T, fsys vfs.FS, p, data string) {
	t.Helper()
	f, err := fsys.Create(p, vfs.WriteCategoryUnspecified)
	if err == nil {
		_, err = io.WriteString(f, data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// ptrFS is the OS file system behind a wrapper of its own, so that two
// Opens of one directory go through different vfs.FS values.
type ptrFS struct{ vfs.FS }

// Two handles on one directory through different file system values still
// exclude each other with ErrLocked (the lock is the OS file's, held in
// this process).
func TestOpenLockedThroughAnotherFS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	o1, o2 := &heapkv.Options{}, &heapkv.Options{}
	heapkv.SetFS(o1, &ptrFS{vfs.Default})
	heapkv.SetFS(o2, &ptrFS{vfs.Default})
	openTestDB(t, dir, o1)
	if _, err := heapkv.Open(dir, o2); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("second Open through another FS value: %v, want ErrLocked", err)
	}
	if _, err := heapkv.Open(dir, nil); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("second Open through vfs.Default: %v, want ErrLocked", err)
	}
}
