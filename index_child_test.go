package heapkv_test

// Child processes for the index damage and index fault tests. A panic on
// one of Pebble's goroutines cannot be recovered by the goroutine that
// called into the database: it ends the process. So each trial runs in a
// child (the test binary re-executed, one test selected, the trial named in
// the environment), which reports on stdout, one line each, when a trial
// starts and how it ended; the parent attributes a child that dies between
// the two to the trial that started, as a panic (its message and stack taken
// from the child's stderr) or a hang (the child's watchdog fired; its
// goroutine dump is on stderr), and starts a new child for the trials left.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"
)

// childHangExit is the exit status of a child whose watchdog fired.
const childHangExit = 7

// startWatchdog ends the process, after printing prefix+"hang "+label on
// stdout and every goroutine's stack on stderr, unless stopped within d.
func startWatchdog(prefix, label string, d time.Duration) *time.Timer {
	return time.AfterFunc(d, func() {
		fmt.Printf("%shang %s\n", prefix, label)
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "watchdog: %s still running after %v; goroutines:\n%s\n", label, d, buf)
		os.Exit(childHangExit)
	})
}

// trialChildRun is what one child process did.
type trialChildRun struct {
	lines  []string // stdout lines that start with the prefix, prefix removed
	stderr string
	err    error // the process's exit error (nil: exit status 0)
}

// runTrialChild runs the test named test in a child process with env added, and
// collects its stdout lines that start with prefix. The child is killed if
// it prints no such line for quiet (a backstop: its own watchdogs should
// fire first).
func runTrialChild(test, prefix string, env []string, quiet time.Duration) trialChildRun {
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), env...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return trialChildRun{err: err}
	}
	if err := cmd.Start(); err != nil {
		return trialChildRun{err: err}
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				lines <- s
			}
		}
	}()
	var run trialChildRun
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	killed := false
loop:
	for {
		select {
		case s, ok := <-lines:
			if !ok {
				break loop
			}
			run.lines = append(run.lines, s)
			timer.Reset(quiet)
		case <-timer.C:
			killed = true
			cmd.Process.Kill() // the process this test started; Wait reaps it
			for s := range lines {
				run.lines = append(run.lines, s)
			}
			break loop
		}
	}
	run.err = cmd.Wait()
	if killed {
		run.err = fmt.Errorf("killed by the parent after %v without a report (%v)", quiet, run.err)
	}
	run.stderr = stderr.String()
	return run
}

// lockedBuffer is a bytes.Buffer safe for the exec package's copying
// goroutine and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// panicSummary returns the panic message in a child's stderr, which
// goroutine panicked (one of Pebble's, or the one that called into the
// database), and the functions on its stack (innermost first, runtime and
// testing frames left out); "" if stderr shows no panic.
func panicSummary(stderr string) string {
	lines := strings.Split(stderr, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "panic: ") && !strings.HasPrefix(l, "fatal error: ") {
			continue
		}
		var frames []string
		origin := "unknown"
		inStack := false
	stack:
		for _, f := range lines[i+1:] {
			switch {
			case strings.HasPrefix(f, "goroutine ") && !inStack:
				inStack = true
			case !inStack || strings.HasPrefix(f, "\t"):
			case f == "":
				break stack
			case strings.HasPrefix(f, "created by "):
				origin = strings.TrimPrefix(f, "created by ")
				if j := strings.Index(origin, " in goroutine"); j > 0 {
					origin = origin[:j]
				}
			case !strings.HasPrefix(f, "runtime.") && !strings.HasPrefix(f, "panic(") && !strings.HasPrefix(f, "testing."):
				if j := strings.LastIndexByte(f, '('); j > 0 {
					f = f[:j]
				}
				if len(frames) < 12 {
					frames = append(frames, f)
				}
			}
		}
		where := "the goroutine that called into the database"
		if strings.HasPrefix(origin, "github.com/cockroachdb/pebble") {
			where = "a Pebble goroutine (created by " + origin + ")"
		}
		return fmt.Sprintf("%s\n    on %s\n    stack: %s", l, where, strings.Join(frames, " <- "))
	}
	return ""
}

// goroutineDump returns the part of a child's stderr its watchdog wrote.
func goroutineDump(stderr string) string {
	if i := strings.Index(stderr, "watchdog: "); i >= 0 {
		return stderr[i:]
	}
	return stderr
}

// tail returns at most the last n bytes of s.
func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// headString returns at most the first n bytes of s.
func headString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
