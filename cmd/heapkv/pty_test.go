package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/require"
)

// term is the master side of a pseudo-terminal with everything read from it
// kept, so tests can wait for output to appear.
type ptyTerm struct {
	t    *testing.T
	f    *os.File
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{} // closed when the reader stops (the child closed the pty)
	pos  int           // output before pos has been matched already

	paused sync.Mutex // held to stop reading, so the child blocks writing
}

func newTerm(t *testing.T, f *os.File) *ptyTerm {
	tm := &ptyTerm{t: t, f: f, done: make(chan struct{})}
	go func() {
		defer close(tm.done)
		b := make([]byte, 4096)
		for {
			// Wait here while a test holds paused (it wants the child to
			// block on a full pty buffer).
			tm.paused.Lock()
			//lint:ignore SA2001 the empty critical section is the gate
			tm.paused.Unlock()
			n, err := f.Read(b)
			tm.mu.Lock()
			tm.buf.Write(b[:n])
			tm.mu.Unlock()
			if err != nil {
				return // EIO once the child has exited
			}
		}
	}()
	return tm
}

// ansi matches the escape sequences liner draws with.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// output returns what the terminal showed since the last match, escape
// sequences removed.
func (tm *ptyTerm) output() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return ansi.ReplaceAllString(tm.buf.String()[tm.pos:], "")
}

// expect waits (up to a deadline) for want to appear in the output after the
// last match, and moves past it.
func (tm *ptyTerm) expect(want string) {
	tm.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tm.mu.Lock()
		raw := tm.buf.String()[tm.pos:]
		tm.mu.Unlock()
		clean := ansi.ReplaceAllString(raw, "")
		if i := strings.Index(clean, want); i >= 0 {
			// Advance pos past the raw bytes that hold clean[:i+len(want)].
			tm.pos += rawOffset(raw, i+len(want))
			return
		}
		select {
		case <-tm.done:
			tm.t.Fatalf("terminal closed before %q appeared; output since last match:\n%q", want, tail(clean))
		default:
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("timed out waiting for %q; output since last match:\n%q", want, tail(clean))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tail returns the end of a long output.
func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

// rawOffset returns the length of the prefix of raw that holds the first n
// bytes of raw with escape sequences removed.
func rawOffset(raw string, n int) int {
	i, seen := 0, 0
	for seen < n && i < len(raw) {
		if loc := ansi.FindStringIndex(raw[i:]); loc != nil && loc[0] == 0 {
			i += loc[1]
			continue
		}
		i++
		seen++
	}
	return i
}

func (tm *ptyTerm) send(s string) {
	tm.t.Helper()
	_, err := tm.f.Write([]byte(s))
	require.NoError(tm.t, err)
}

const (
	keyLeft  = "\x1b[D"
	keyUp    = "\x1b[A"
	keyBS    = "\x7f"
	keyEnd   = "\x05" // Ctrl-E
	keyCtrlC = "\x03"
	keyCtrlD = "\x04"
	keyTab   = "\t"
)

var (
	buildOnce sync.Once
	buildDir  string // removed by TestMain
	buildExe  string
	buildErr  error
	buildOut  []byte
)

// buildHeapkv builds the command once into a temporary directory.
func buildHeapkv(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "heapkv-pty-test-"); buildErr != nil {
			return
		}
		buildExe = filepath.Join(buildDir, "heapkv")
		buildOut, buildErr = exec.Command("go", "build", "-o", buildExe, ".").CombinedOutput()
	})
	require.NoError(t, buildErr, "go build: %s", buildOut)
	return buildExe
}

// TestInteractivePTY drives the shell through a pseudo-terminal as a person
// would: typing, line editing, history, completion, Ctrl-C and Ctrl-D.
func TestInteractivePTY(t *testing.T) {
	exe := buildHeapkv(t)
	dir := filepath.Join(t.TempDir(), "demo-db")
	cmd := exec.Command(exe, "-d", dir)
	history := filepath.Join(t.TempDir(), "history")
	cmd.Env = append(os.Environ(), "TERM=xterm", "HEAPKV_HISTORY="+history)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Skipf("skipping: cannot open a pseudo-terminal here (pty.Start: %v)", err)
	}
	defer f.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	tm := newTerm(t, f)
	prompt := "heapkv:" + filepath.Clean(dir)
	if len(prompt) > 7+32 {
		prompt = "heapkv:…/demo-db"
	}

	// -d names a directory that does not exist: the shell asks first.
	tm.expect("does not exist. Create a new database there? [y/N] ")
	tm.send("y\r")
	tm.expect("(the directory did not exist)")

	// A command and Enter.
	tm.expect(prompt + "> ")
	tm.send("put k1 v1\r")
	tm.expect("OK")
	tm.expect(prompt + "> ")

	// Line editing: "gte", Left, Backspace deletes the t, End, then the rest.
	tm.send("gte" + keyLeft + keyBS + keyEnd + "t k1\r")
	tm.expect(`"v1"`)
	tm.expect(prompt + "> ")

	// History: Up recalls "get k1".
	tm.send(keyUp)
	tm.expect("get k1")
	tm.send("\r")
	tm.expect(`"v1"`)
	tm.expect(prompt + "> ")

	// Completion: "sca" Tab completes to "scan".
	tm.send("sca" + keyTab)
	tm.expect("scan")
	tm.send("\r")
	tm.expect(`"k1" "v1"`)
	tm.expect("(1 key)")
	tm.expect(prompt + "> ")

	// Ctrl-C on an empty line, and on a line being typed (which it
	// clears): the shell goes on.
	tm.send(keyCtrlC)
	tm.expect("^C")
	tm.expect(prompt + "> ")
	tm.send("del k1" + keyCtrlC)
	tm.expect("^C")
	tm.expect(prompt + "> ")
	tm.send("exists k1\r")
	tm.expect("true")
	tm.expect(prompt + "> ")

	// A transaction shows in the prompt; an error is one line.
	tm.send("begin\r")
	tm.expect("BEGIN")
	tm.expect(prompt + " (txn)> ")
	tm.send("put k2 v2\r")
	tm.expect("QUEUED")
	tm.send("bogus\r")
	tm.expect("error: unknown command")
	tm.expect(prompt + " (txn)> ")
	tm.send("commit\r")
	tm.expect("COMMIT (1 writes)")
	tm.expect(prompt + "> ")
	// The history is saved after every line, not only at exit.
	saved, err := os.ReadFile(history)
	require.NoError(t, err)
	require.Equal(t, "put k1 v1\nget k1\nscan\nexists k1\nbegin\nput k2 v2\nbogus\ncommit\n", string(saved))

	// Ctrl-D on an empty line exits cleanly.
	tm.send(keyCtrlD)
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status; output %q", tm.output())
	case <-time.After(10 * time.Second):
		t.Fatalf("shell did not exit after Ctrl-D; output %q", tm.output())
	}
	require.Equal(t, 0, cmd.ProcessState.ExitCode())

	// The writes are durable and the history was saved.
	out, errs, code := cli(t, "", "-d", dir, "-c", "scan")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "\"k1\" \"v1\"\n\"k2\" \"v2\"\n", out)
	hist, err := os.ReadFile(history)
	require.NoError(t, err)
	require.Equal(t, "put k1 v1\nget k1\nscan\nexists k1\nbegin\nput k2 v2\nbogus\ncommit\n", string(hist))
}

// TestInteractivePTYQuitRollsBack checks that leaving with an open
// transaction rolls it back and says so, and that Ctrl-C stops a long scan
// without ending the shell.
func TestInteractivePTYQuitRollsBack(t *testing.T) {
	exe := buildHeapkv(t)
	dir := filepath.Join(t.TempDir(), "db")
	// Enough keys that printing them all takes a while.
	var script strings.Builder
	for i := 0; i < 200; i++ {
		script.WriteString("mput")
		for j := 0; j < 100; j++ {
			script.WriteString(" k" + strconv.Itoa(i*100+j) + " " + strings.Repeat("v", 200))
		}
		script.WriteString("\n")
	}
	_, errs, code := cli(t, script.String(), "-d", dir, "--nosync")
	require.Equal(t, 0, code, errs)

	cmd := exec.Command(exe, "-d", dir)
	cmd.Env = append(os.Environ(), "TERM=xterm", "HEAPKV_HISTORY="+filepath.Join(t.TempDir(), "history"))
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Skipf("skipping: cannot open a pseudo-terminal here (pty.Start: %v)", err)
	}
	defer f.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	tm := newTerm(t, f)
	tm.expect("> ")

	// Ctrl-C during a scan: the reader of the pty is slow enough (20000
	// keys of 200 bytes) that the scan is still running when it arrives.
	tm.send("scan\r")
	tm.expect(`"k0" `)
	tm.paused.Lock() // the scan blocks writing to the full terminal
	time.Sleep(100 * time.Millisecond)
	tm.send(keyCtrlC)
	time.Sleep(100 * time.Millisecond)
	tm.paused.Unlock()
	tm.expect("cancelled (Ctrl-C)")
	tm.expect("> ")
	tm.send("count\r")
	tm.expect("20000")
	tm.expect("> ")

	tm.send("begin\r")
	tm.expect("(txn)> ")
	tm.send("del k0\r")
	tm.expect("QUEUED")
	tm.send("quit\r")
	tm.expect("rolled back the open transaction; its 1 writes were discarded")
	select {
	case err := <-exited:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("shell did not exit after quit; output %q", tm.output())
	}
	out, errs, code := cli(t, "", "-d", dir, "-c", "exists k0")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "true\n", out)
}

// TestInteractivePTYAttachProgress checks that attach shows a progress bar
// with an ETA on a terminal, that Ctrl-C stops it without ending the shell,
// and that a second attach finishes the resync.
func TestInteractivePTYAttachProgress(t *testing.T) {
	exe := buildHeapkv(t)
	dir := filepath.Join(t.TempDir(), "db")
	mirror := filepath.Join(t.TempDir(), "m1")
	var script strings.Builder
	script.WriteString("detach 1\n")
	for i := 0; i < 48; i++ {
		script.WriteString("put k" + strconv.Itoa(i) + " " + strings.Repeat("x", 64<<10) + "\n")
	}
	_, errs, code := cli(t, script.String(), "-d", dir, "--mirror", mirror, "--nosync")
	require.Equal(t, 0, code, errs)

	cmd := exec.Command(exe, "-d", dir, "--resync-rate", "1M")
	cmd.Env = append(os.Environ(), "TERM=xterm", "HEAPKV_HISTORY="+filepath.Join(t.TempDir(), "history"))
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Skipf("skipping: cannot open a pseudo-terminal here (pty.Start: %v)", err)
	}
	defer f.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	}()
	tm := newTerm(t, f)
	tm.expect("> ")
	tm.send("attach 1\r")
	tm.expect("attach 1: [")
	tm.expect("ETA ")
	tm.send(keyCtrlC)
	tm.expect("error: attach 1: cancelled (Ctrl-C)")
	tm.expect("> ")
	tm.send("replicas\r")
	tm.expect("stale")
	tm.expect("> ")
	tm.send("attach 1\r")
	tm.expect("OK (replica 1 in-sync")
	tm.expect("> ")
	tm.send(keyCtrlD)
	select {
	case err := <-exited:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("shell did not exit after Ctrl-D; output %q", tail(tm.output()))
	}
}

// On a terminal, -d naming a directory that does not exist is confirmed
// first; any answer but y leaves nothing behind.
func TestMissingDirIsConfirmed(t *testing.T) {
	exe := buildHeapkv(t)
	dir := filepath.Join(t.TempDir(), "typo")
	cmd := exec.Command(exe, "-d", dir)
	cmd.Env = append(os.Environ(), "TERM=xterm", "HEAPKV_HISTORY="+filepath.Join(t.TempDir(), "history"))
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Skipf("skipping: cannot open a pseudo-terminal here (pty.Start: %v)", err)
	}
	defer f.Close()
	tm := newTerm(t, f)
	tm.expect("does not exist. Create a new database there? [y/N] ")
	tm.send("\r")
	tm.expect("nothing created")
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 1, ee.ExitCode())
	_, err = os.Stat(dir)
	require.True(t, os.IsNotExist(err), "the directory was made: %v", err)
}
