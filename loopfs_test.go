//go:build linux

package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode"
)

// Helpers for tests on a real, small file system: a loop-mounted ext4
// image (mountExt4), filling it to an exact number of free blocks
// (fillTo), a watchdog for steps that could hang (within), and running a
// scenario in a child process (runScenarioChild), so that a panic on one
// of Pebble's goroutines, which ends the whole process, comes back to the
// parent as a test failure and the parent still unmounts.

var stepTimeout = flag.Duration("heapkv.steptimeout", 20*time.Second, "disk-full tests: how long one step (Put, Checkpoint, Close, Open...) may take before the watchdog reports a hang")

const (
	fsBlock = 4096 // the test images' block size
	// hangMarker starts the line the watchdog prints; the parent looks for it.
	hangMarker = "WATCHDOG:"
	// fillerName is the file fillTo grows and shrinks.
	fillerName = "filler"
)

// mountExt4 makes an ext4 file system of size bytes in a sparse image file
// under t.TempDir(), mounts it through a loop device and returns the mount
// point; cleanup unmounts it (lazily if it is busy) and detaches the loop
// device. It skips the test when it cannot: not root, no mkfs.ext4 or
// mount, or no loop device.
//
// The file system has 4 KiB blocks, a 4 MiB journal and no blocks reserved
// for root (-m 0): the tests run as root, and root could otherwise write
// into the 5% reserve after an ordinary user would see ENOSPC.
func mountExt4(t *testing.T, size int64) string {
	t.Helper()
	needLoopMount(t)
	tmp := t.TempDir()
	img := filepath.Join(tmp, "ext4.img")
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-J", "size=4",
		"-E", "lazy_itable_init=0,lazy_journal_init=0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount an ext4 image through a loop device (no loop devices in this environment?): %v: %s", err, bytes.TrimSpace(out))
	}
	// Registered after TempDir's cleanup, so it runs before it.
	t.Cleanup(func() { unmount(t, img, mnt) })
	return mnt
}

// needLoopMount skips the test unless it runs as root and has the tools
// mountExt4 uses.
func needLoopMount(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a loop device (ext4 image); run as root to include this test")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to mount an ext4 image: %v", tool, err)
		}
	}
}

// unmount unmounts mnt, lazily if it is still busy (a process we started
// may still hold a file open), and detaches whatever loop device still
// backs img. It reports failures without failing the test: a leftover
// mount must not hide the test's own result.
func unmount(t *testing.T, img, mnt string) {
	out, err := exec.Command("umount", mnt).CombinedOutput()
	if err != nil {
		t.Logf("umount %s: %v: %s; unmounting lazily", mnt, err, bytes.TrimSpace(out))
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount -l %s: %v: %s", mnt, err, bytes.TrimSpace(out))
		}
	}
	// mount -o loop sets autoclear, so the device normally goes with the
	// unmount; a lazy unmount keeps it until the last file is closed.
	out, err = exec.Command("losetup", "-j", img).Output()
	if err != nil {
		t.Logf("losetup -j %s: %v", img, err)
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(dev, "/dev/loop") {
			if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
				t.Logf("losetup -d %s: %v: %s", dev, err, bytes.TrimSpace(out))
			}
		}
	}
}

// freeBlocks returns the blocks an unprivileged writer could still get on
// the file system holding dir (statfs f_bavail; with -m 0 root gets no
// more), in units of fsBlock.
func freeBlocks(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize / fsBlock, nil
}

// fillTo grows or shrinks the file fillerName in dir until the file system
// has exactly k free blocks, and returns the file's path.
func fillTo(dir string, k int64) (string, error) {
	path := filepath.Join(dir, fillerName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Write back everything dirty first, so that what statfs reports does
	// not move afterwards as delayed allocations reach the disk.
	syscall.Sync()
	for range 100 {
		free, err := freeBlocks(dir)
		if err != nil {
			return "", err
		}
		fi, err := f.Stat()
		if err != nil {
			return "", err
		}
		size := fi.Size()
		switch {
		case free == k:
			return path, f.Sync()
		case free > k:
			// Extent-tree blocks the file may need count too: ask for
			// less whenever all of it does not fit.
			n := (free - k) * fsBlock
			for {
				err = syscall.Fallocate(int(f.Fd()), 0, size, n)
				if !errors.Is(err, syscall.ENOSPC) || n == fsBlock {
					break
				}
				n = max(n/2/fsBlock, 1) * fsBlock
			}
			if err != nil && !errors.Is(err, syscall.ENOSPC) {
				return "", fmt.Errorf("fallocate %s: %w", path, err)
			}
		default:
			if size == 0 {
				return "", fmt.Errorf("%s: only %d blocks free without a filler, want %d", dir, free, k)
			}
			if err := f.Truncate(max(size-(k-free)*fsBlock, 0)); err != nil {
				return "", err
			}
		}
		if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
			return "", err
		}
	}
	free, _ := freeBlocks(dir)
	return "", fmt.Errorf("%s: cannot reach %d free blocks with a filler file (%d free now)", dir, k, free)
}

// within runs fn and returns its error, giving it *stepTimeout to return.
func within(what string, fn func() error) error { return withinFor(*stepTimeout, what, fn) }

// withinFor runs fn and returns its error, giving it d to return. If it
// does not, withinFor prints every goroutine's stack and ends the process:
// a goroutine stuck inside the database cannot be stopped, and only a
// child process runs it (see runScenarioChild), whose parent reports the
// hang with this output.
func withinFor(d time.Duration, what string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
	}
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	childLog.summary()
	fmt.Fprintf(os.Stderr, "\n%s %s did not return within %v; every goroutine:\n\n%s\n", hangMarker, what, d, buf)
	os.Exit(3)
	return nil
}

// childLog is where a child's database logs (quietHandler): to stdout,
// each kind of line at most quietRepeats times.
var childLog = &quietHandler{
	h:  slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}),
	st: &quietState{seen: map[string]int{}},
}

const quietRepeats = 3

// quietHandler passes a log line on unless quietRepeats lines of the same
// shape (the message without its digits) already went, so that a loop that
// logs one failure thousands of times (Pebble retrying a flush) does not
// bury the output; summary prints how many it held back.
type quietHandler struct {
	h  slog.Handler
	st *quietState
}

type quietState struct {
	mu   sync.Mutex
	seen map[string]int
}

func (q *quietHandler) Enabled(ctx context.Context, l slog.Level) bool { return q.h.Enabled(ctx, l) }

func (q *quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &quietHandler{h: q.h.WithAttrs(as), st: q.st}
}

func (q *quietHandler) WithGroup(name string) slog.Handler {
	return &quietHandler{h: q.h.WithGroup(name), st: q.st}
}

func (q *quietHandler) Handle(ctx context.Context, r slog.Record) error {
	shape := strings.Map(func(c rune) rune {
		if unicode.IsDigit(c) {
			return -1
		}
		return c
	}, r.Message)
	q.st.mu.Lock()
	q.st.seen[shape]++
	n := q.st.seen[shape]
	q.st.mu.Unlock()
	switch {
	case n > quietRepeats:
		return nil
	case n == quietRepeats:
		r = r.Clone()
		r.Message += " [further lines like this are counted, not printed]"
	}
	return q.h.Handle(ctx, r)
}

// summary prints how many lines of each shape were held back.
func (q *quietHandler) summary() {
	q.st.mu.Lock()
	defer q.st.mu.Unlock()
	for shape, n := range q.st.seen {
		if n > quietRepeats {
			fmt.Printf("log: %d more lines like %q were not printed\n", n-quietRepeats, shape)
		}
	}
}

// runScenarioChild runs test (a top-level test name) in a new process of
// this test binary with env added, and fails t with a summary (hang, panic
// or failed test) and the child's whole output unless the child passed.
// The child must see env and run the scenario instead of starting
// children itself.
func runScenarioChild(t *testing.T, test string, env ...string) {
	t.Helper()
	args := []string{"-test.run=^" + test + "$", "-test.count=1", "-test.v=true", "-test.timeout=10m",
		fmt.Sprintf("-heapkv.steptimeout=%v", *stepTimeout)}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	// The watchdog inside the child ends it if one step hangs; this one
	// covers a child that hangs outside any step.
	limit := time.AfterFunc(10**stepTimeout+2*time.Minute, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	limit.Stop()
	text := out.String()
	if err == nil && strings.Contains(text, "--- PASS") {
		t.Logf("child passed in %v; its output:\n%s", time.Since(start).Round(time.Millisecond), text)
		return
	}
	t.Errorf("child %s: %s (exit: %v, after %v)", test, childOutcome(text), err, time.Since(start).Round(time.Millisecond))
	t.Fatalf("child output:\n%s", text)
}

// childOutcome summarises why a child failed: the watchdog's line, the
// panic's message and the frame that raised it, or the failing test's
// first error lines.
func childOutcome(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, hangMarker) {
			return "HANG: " + strings.TrimPrefix(l, hangMarker+" ") + hungIn(lines[i+1:])
		}
	}
	for i, l := range lines {
		if strings.HasPrefix(l, "panic: ") {
			s := "PANIC: " + l
			// The panicking goroutine's first frames below "goroutine N".
			for j := i + 1; j < len(lines) && j < i+30; j++ {
				if strings.HasPrefix(lines[j], "goroutine ") {
					var fns []string
					for _, f := range firstFrames(lines[j+1:], 8) {
						fns = append(fns, shortName(f))
					}
					s += " [at " + strings.Join(fns, " <- ") + "]"
					break
				}
			}
			return s
		}
	}
	// The child prints its progress itself, so the only file:line lines
	// of test output are its errors.
	var errs []string
	for _, l := range lines {
		if t := strings.TrimSpace(l); strings.Contains(t, "_test.go:") && len(errs) < 8 {
			errs = append(errs, t)
		}
	}
	return "FAILED: " + strings.Join(errs, " | ")
}

// hungIn names, for a watchdog report, the heapkv and Pebble functions the
// other goroutines were blocked in (the first such frame of each stack).
func hungIn(lines []string) string {
	seen := map[string]bool{}
	var where []string
	for i, l := range lines {
		if !strings.HasPrefix(l, "goroutine ") || i+1 >= len(lines) {
			continue
		}
		for _, f := range firstFrames(lines[i+1:], 12) {
			if (strings.Contains(f, "/heapkv") || strings.Contains(f, "/pebble")) && !strings.Contains(f, "_test.") {
				if f = shortName(f); !seen[f] {
					seen[f] = true
					where = append(where, f)
				}
				break
			}
		}
	}
	if len(where) == 0 {
		return ""
	}
	return "; goroutines waiting in: " + strings.Join(where, ", ")
}

// firstFrames returns the function names, without arguments, of up to n
// frames of one goroutine's stack dump (a line naming the function, then
// its file:line indented; a blank line ends the stack).
func firstFrames(lines []string, n int) []string {
	var fns []string
	for i := 0; i+1 < len(lines) && len(fns) < n; i += 2 {
		if lines[i] == "" {
			break
		}
		fn := lines[i]
		if k := strings.LastIndex(fn, "("); k > 0 && strings.HasSuffix(fn, ")") {
			fn = fn[:k]
		}
		fns = append(fns, fn)
	}
	return fns
}

// shortName drops the module paths from a function name.
func shortName(fn string) string {
	for _, p := range []string{"github.com/cockroachdb/", "github.com/heapkv/heapkv/", "github.com/heapkv/"} {
		fn = strings.TrimPrefix(fn, p)
	}
	return fn
}
