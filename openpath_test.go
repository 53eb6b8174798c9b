package heapkv_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
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

const permEnvDirs = "HEAPKV_PERMCHILD_DIRS"

// A directory the process may not write to is fs.ErrPermission, whether
// the database directory exists or is to be made in it. Permission bits do
// not stop root, so as root the Opens run in a child process as nobody.
func TestOpenNoWritePermission(t *testing.T) {
	base := t.TempDir()
	existing := filepath.Join(base, "existing")
	locked := filepath.Join(base, "parent")
	for _, d := range []string{existing, locked} {
		if err := os.Mkdir(d, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	dirs := []string{existing, filepath.Join(locked, "db")}
	if os.Geteuid() != 0 {
		for _, d := range dirs {
			_, err := heapkv.Open(d, nil)
			wantOpenError(t, d, err, fs.ErrPermission)
		}
		return
	}
	// As root: a copy of the test binary, where nobody can run it, runs
	// TestPermChild as nobody.
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(base, "heapkv.test")
	copyExecutable(t, exe)
	cmd := exec.Command(exe, "-test.run=^TestPermChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), permEnvDirs+"="+strings.Join(dirs, string(filepath.ListSeparator)))
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "permchild:") {
		t.Skipf("skipping: running as root and cannot run a child process as uid 65534 to test permissions (%v)\n%s", err, out)
	}
	if err != nil {
		t.Fatalf("permission child: %v\n%s", err, out)
	}
	for _, d := range dirs {
		if want := "permchild: " + d + ": permission"; !strings.Contains(string(out), want+"\n") {
			t.Fatalf("child as nobody: want %q in its output:\n%s", want, out)
		}
	}
	t.Logf("child as nobody:\n%s", out)
	if names := listDir(t, existing); len(names) != 0 {
		t.Fatalf("%s holds %v", existing, names)
	}
}

// copyExecutable copies the running test binary to p, mode 0755.
func copyExecutable(t *testing.T, p string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestPermChild is the child of TestOpenNoWritePermission: it opens each
// directory and says how that failed. It does nothing otherwise.
func TestPermChild(t *testing.T) {
	dirs := os.Getenv(permEnvDirs)
	if dirs == "" {
		t.Skip("child of TestOpenNoWritePermission only")
	}
	for _, d := range filepath.SplitList(dirs) {
		db, err := heapkv.Open(d, nil)
		switch {
		case err == nil:
			fmt.Printf("permchild: %s: opened\n", d)
			db.Close()
		case errors.Is(err, heapkv.ErrLocked):
			fmt.Printf("permchild: %s: locked: %v\n", d, err)
		case errors.Is(err, fs.ErrPermission):
			fmt.Printf("permchild: %s: permission\n(%v)\n", d, err)
		default:
			fmt.Printf("permchild: %s: other error: %v\n", d, err)
		}
	}
}

// A read-only file system is EROFS: an empty directory, a directory to be
// made, and an existing database (whose LOCK exists). Mounting needs root.
func TestOpenReadOnlyMount(t *testing.T) {
	ro := readOnlyMount(t, func(dir string) {
		for _, d := range []string{"empty", "db"} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		db := openTestDB(t, filepath.Join(dir, "db"), nil)
		if err := db.Put([]byte("k"), []byte("v")); err != nil {
			t.Fatal(err)
		}
		mustClose(t, db)
	})
	for _, d := range []string{"empty", "new", "db"} {
		_, err := heapkv.Open(filepath.Join(ro, d), nil)
		wantOpenError(t, d, err, syscall.EROFS)
	}
}

// readOnlyMount returns a read-only mount of a directory that fill has
// filled: a read-only bind mount, or else a loop-mounted ext4 image. It
// skips the test when it can do neither (not root, no loop device).
func readOnlyMount(t *testing.T, fill func(dir string)) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a read-only file system needs root")
	}
	base := t.TempDir()
	src, dst := filepath.Join(base, "src"), filepath.Join(base, "ro")
	for _, d := range []string{src, dst} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mounted := false
	umount := func() {
		if !mounted {
			return
		}
		mounted = false
		if out, err := exec.Command("umount", dst).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dst, err, out)
		}
	}
	t.Cleanup(umount) // registered after TempDir, so it runs before the removal
	fill(src)
	bindOut, err := exec.Command("mount", "-o", "bind,ro", src, dst).CombinedOutput()
	if err == nil {
		mounted = true
		if probe := os.WriteFile(filepath.Join(dst, "probe"), nil, 0o644); errors.Is(probe, syscall.EROFS) {
			return dst
		}
		umount() // an old mount(8) that ignores ro on a bind mount
	}
	img := filepath.Join(base, "fs.img")
	loopOut, err := exec.Command("sh", "-c", "truncate -s 16M "+img+" && mkfs.ext4 -q -F "+img+
		" && mount -o loop "+img+" "+dst).CombinedOutput()
	if err != nil {
		t.Skipf("skipping: cannot make a read-only mount (bind: %s; loop: %v %s)", bindOut, err, loopOut)
	}
	mounted = true
	fill(dst)
	umount()
	if out, err := exec.Command("mount", "-o", "loop,ro", img, dst).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot mount %s read-only: %v %s", img, err, out)
	}
	mounted = true
	return dst
}
