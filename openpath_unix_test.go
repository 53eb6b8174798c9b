//go:build unix

package heapkv_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/heapkv/heapkv"
)

// permEnvDirs passes TestPermChild the directories it tries to open.
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
