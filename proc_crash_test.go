//go:build linux

package heapkv_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// Real process crashes (DESIGN "How it is tested": kill -9 a writer process
// mid-load, reopen, verify).
//
// The test binary re-executes itself as a child (TestProcCrashChild) that
// opens a database in a real directory and writes from several goroutines,
// every write synced. Each goroutine owns its own keys, so per key the
// writes are sequential, and it prints one line before each write (the
// intent: its keys and versions) and one after it is acknowledged. A value
// is a pure function of (key, round, version), so a line names a value
// exactly. The parent SIGKILLs the child at a random moment, copies the
// directory, and checks the copy: every key not in an unacknowledged write
// holds its last acknowledged value (or, untouched this round, what the
// previous round left), and each goroutine's one unacknowledged write shows
// on all of its keys or on none. Then Check must pass. The next child
// recovers the original (crashed) directory itself, so recovery after a
// crash, and crashes during recovery, are exercised too; the state the
// parent saw in the copy is what that child must start from.
//
//	go test -run ProcCrash -heapkv.killrounds=200 .

var (
	killRounds = flag.Int("heapkv.killrounds", 3, "process crash test: rounds of start, kill -9, verify")
	killSeed   = flag.Uint64("heapkv.killseed", 0, "process crash test: random seed (0: from the clock)")
)

const (
	pcEnvDir   = "HEAPKV_PROCCRASH_DIR"
	pcEnvRound = "HEAPKV_PROCCRASH_ROUND"
	pcEnvSeed  = "HEAPKV_PROCCRASH_SEED"

	pcWriters = 6  // goroutines in the child
	pcKeys    = 40 // keys per goroutine
)

func pcKey(g, i int) string { return fmt.Sprintf("w%d-k%03d", g, i) }

// pcOptions are the child's options: small log segments and checkpoint
// threshold, and the smallest memtable, so that log rotation, background
// checkpoints and index flushes all happen within a round.
func pcOptions() *heapkv.Options {
	return &heapkv.Options{
		SegmentSize:        64 * 4096,
		LogSegmentSize:     64 << 10,
		CheckpointLogBytes: 512 << 10,
		IndexMemTableSize:  1 << 20,
		IndexCacheSize:     4 << 20,
		Logger:             slog.New(slog.DiscardHandler),
	}
}

// pcState is the state version ver of key gets in round: absent (a delete)
// or a value of pseudo-random length and contents, both derived from the
// three numbers alone.
func pcState(key string, round, ver int) kvState {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%d|%d", key, round, ver)
	rng := rand.New(rand.NewPCG(h.Sum64(), 0x9C))
	if rng.IntN(8) == 0 {
		return kvState{}
	}
	var n int
	switch r := rng.IntN(10); {
	case r < 2:
		n = rng.IntN(100)
	case r < 4:
		n = 400 + rng.IntN(300) // around the inline threshold
	case r < 8:
		n = 600 + rng.IntN(9000)
	case r < 9:
		n = 10000 + rng.IntN(30000)
	default:
		n = 250000 + rng.IntN(100000) // more than one segment
	}
	v := make([]byte, n)
	prefix := fmt.Sprintf("%s|%d|%d|", key, round, ver)
	copy(v, prefix)
	for i := len(prefix); i < n; i += 8 {
		x := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			v[i+j] = byte(x >> (8 * j))
		}
	}
	return kvState{present: true, val: v}
}

// childIO returns how a child that is killed mid-write reports: emit
// writes one line to stdout with one write(2) (a pipe write of less than
// PIPE_BUF bytes is atomic, so a kill never leaves half a line; emit may
// be called from any goroutine), die prints to stderr and exits 3.
func childIO() (emit func(line string), die func(format string, args ...any)) {
	die = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
		os.Exit(3)
	}
	var mu sync.Mutex
	emit = func(line string) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := os.Stdout.WriteString(line); err != nil {
			die("stdout: %v", err)
		}
	}
	return emit, die
}

// TestProcCrashChild is the child: it writes until killed. It does nothing
// unless started by TestProcCrash.
func TestProcCrashChild(t *testing.T) {
	dir := os.Getenv(pcEnvDir)
	if dir == "" {
		t.Skip("child of TestProcCrash only")
	}
	round, _ := strconv.Atoi(os.Getenv(pcEnvRound))
	seed, _ := strconv.ParseUint(os.Getenv(pcEnvSeed), 10, 64)
	emit, die := childIO()
	db, err := heapkv.Open(dir, pcOptions())
	if err != nil {
		die("open: %v", err)
	}
	emit("R\n")
	for g := range pcWriters {
		go func() {
			rng := rand.New(rand.NewPCG(seed, uint64(round*100+g)))
			ver := make([]int, pcKeys)
			for seq := 1; ; seq++ {
				// One op: a single put/delete, or a batch over 2..4 keys.
				n := 1
				if rng.IntN(5) == 0 {
					n = 2 + rng.IntN(3)
				}
				var b heapkv.Batch
				var line strings.Builder
				fmt.Fprintf(&line, "I %d %d", g, seq)
				used := map[int]bool{}
				for range n {
					i := rng.IntN(pcKeys)
					if used[i] {
						continue
					}
					used[i] = true
					ver[i]++
					key := pcKey(g, i)
					if s := pcState(key, round, ver[i]); s.present {
						b.Put([]byte(key), s.val)
					} else {
						b.Delete([]byte(key))
					}
					fmt.Fprintf(&line, " %s %d", key, ver[i])
				}
				line.WriteByte('\n')
				emit(line.String())
				if err := db.Apply(&b, &heapkv.WriteOptions{Sync: true}); err != nil {
					die("apply: %v", err)
				}
				emit(fmt.Sprintf("A %d %d\n", g, seq))
			}
		}()
	}
	time.Sleep(2 * time.Minute)
	die("not killed within 2 minutes")
}

// pcOp is one write a child announced.
type pcOp struct {
	seq  int
	keys []string
	vers []int
}

// pcRound is what the parent learned from one child's output.
type pcRound struct {
	ready    bool
	acks     int
	acked    map[string]int // key -> last acknowledged version
	inflight map[int]*pcOp  // goroutine -> announced, unacknowledged op
}

func (r *pcRound) parse(line string) error {
	f := strings.Fields(line)
	if len(f) == 0 {
		return fmt.Errorf("empty line")
	}
	switch f[0] {
	case "R":
		r.ready = true
		return nil
	case "I", "A":
	default:
		return fmt.Errorf("unexpected line %q", line)
	}
	if len(f) < 3 {
		return fmt.Errorf("short line %q", line)
	}
	g, err1 := strconv.Atoi(f[1])
	seq, err2 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("line %q: %w", line, err)
	}
	if f[0] == "I" {
		if prev := r.inflight[g]; prev != nil {
			return fmt.Errorf("writer %d announced op %d before op %d was acknowledged", g, seq, prev.seq)
		}
		op := &pcOp{seq: seq}
		for i := 3; i+1 < len(f); i += 2 {
			v, err := strconv.Atoi(f[i+1])
			if err != nil {
				return fmt.Errorf("line %q: %w", line, err)
			}
			op.keys, op.vers = append(op.keys, f[i]), append(op.vers, v)
		}
		r.inflight[g] = op
		return nil
	}
	op := r.inflight[g]
	if op == nil || op.seq != seq {
		return fmt.Errorf("writer %d acknowledged op %d, which it did not announce", g, seq)
	}
	for i, k := range op.keys {
		r.acked[k] = op.vers[i]
	}
	delete(r.inflight, g)
	r.acks++
	return nil
}

func TestProcCrash(t *testing.T) {
	if os.Getenv(pcEnvDir) != "" {
		t.Skip("in the child")
	}
	seed := *killSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-heapkv.killseed to repeat the kill schedule)", seed)
	rng := rand.New(rand.NewPCG(seed, 0x4B111))
	dir := filepath.Join(t.TempDir(), "db")

	prev := map[string]kvState{} // what the last verification found
	for g := range pcWriters {
		for i := range pcKeys {
			prev[pcKey(g, i)] = kvState{}
		}
	}
	var totalAcks, inflightShown int
	for round := range *killRounds {
		r := runChild(t, dir, round, seed, rng)
		totalAcks += r.acks
		inflightShown += pcVerify(t, dir, round, r, prev)
	}
	// The original directory, recovered in this process, must agree too.
	db := openTestDB(t, dir, pcOptions())
	m := kvModel{}
	for k, s := range prev {
		m.ack(k, s)
	}
	m.verify(t, db, "final reopen of the original directory")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d rounds, %d acknowledged writes; %d unacknowledged writes found applied", *killRounds, totalAcks, inflightShown)
}

// runChild starts a child for round, kills it with SIGKILL at a random
// moment, and returns what it printed.
func runChild(t *testing.T, dir string, round int, seed uint64, rng *rand.Rand) *pcRound {
	t.Helper()
	// Kill after a random number of acknowledged writes, or (one round in
	// four) a random time after start, which may fall inside Open's
	// recovery.
	killAfterAcks, killAfter := 1+rng.IntN(400), 5*time.Second
	if rng.IntN(4) == 0 {
		killAfterAcks, killAfter = -1, time.Duration(rng.IntN(300))*time.Millisecond
	}
	res := &pcRound{acked: map[string]int{}, inflight: map[int]*pcOp{}}
	env := []string{
		pcEnvDir + "=" + dir,
		pcEnvRound + "=" + strconv.Itoa(round),
		pcEnvSeed + "=" + strconv.FormatUint(seed, 10),
	}
	killChild(t, fmt.Sprintf("round %d", round), "TestProcCrashChild", env, killAfterAcks, killAfter,
		func(line string) (int, error) { err := res.parse(line); return res.acks, err })
	return res
}

// killChild runs the test binary's test child (a function that writes
// until killed) with env added to the environment, hands every line the
// child prints to onLine, which returns how many writes the child has
// acknowledged so far, and kills the child with SIGKILL once that reaches
// killAfterAcks (if positive) or killAfter has passed. It returns when the
// child's output has ended, with the time of the kill; it fails the test
// if the child ended by itself, hung for 2 minutes, or printed a line
// onLine refused.
func killChild(t *testing.T, label, child string, env []string, killAfterAcks int, killAfter time.Duration,
	onLine func(line string) (acks int, err error)) (killedAt time.Time) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+child+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 256)
	go func() {
		defer close(lines)
		br := bufio.NewReader(stdout)
		for {
			s, err := br.ReadString('\n')
			if err != nil {
				return // a line without its newline was never fully written
			}
			lines <- s
		}
	}()

	timer := time.NewTimer(killAfter)
	defer timer.Stop()
	killed := false
	kill := func() {
		if !killed {
			killed, killedAt = true, time.Now()
			_ = cmd.Process.Kill() // SIGKILL
		}
	}
	watchdog := time.NewTimer(2 * time.Minute)
	defer watchdog.Stop()
	hung, acks := false, 0
	for open := true; open; {
		select {
		case line, ok := <-lines:
			if !ok {
				open = false
				break
			}
			if acks, err = onLine(line); err != nil {
				kill()
				t.Fatalf("%s: child output: %v", label, err)
			}
			if killAfterAcks > 0 && acks >= killAfterAcks {
				kill()
			}
		case <-timer.C:
			kill()
		case <-watchdog.C:
			hung = true
			kill()
		}
	}
	if hung {
		t.Fatalf("%s: child made no progress for 2 minutes (%d acks)\nstderr:\n%s", label, acks, stderr.String())
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !killed || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("%s: child ended by itself (%v)\nstderr:\n%s", label, err, stderr.String())
	}
	return killedAt
}

// pcVerify checks a copy of the crashed directory against what round's
// child acknowledged, updates prev to what it found, and returns how many
// unacknowledged writes showed.
func pcVerify(t *testing.T, dir string, round int, r *pcRound, prev map[string]kvState) (shown int) {
	t.Helper()
	label := fmt.Sprintf("round %d (%d acks, %d writes in flight)", round, r.acks, len(r.inflight))
	if !r.ready {
		label += " killed during Open"
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) && !r.ready && r.acks == 0 {
		// Killed before Open created the directory: nothing was
		// written, so there is nothing to recover (the next round
		// creates the database).
		return 0
	}
	cp := filepath.Join(t.TempDir(), "copy")
	if err := copyDirTree(dir, cp); err != nil {
		t.Fatalf("%s: copy: %v", label, err)
	}
	db := openTestDB(t, cp, pcOptions())
	defer func() {
		if err := db.Close(); err != nil {
			t.Errorf("%s: close: %v", label, err)
		}
	}()
	get := func(key string) kvState {
		v, err := db.Get([]byte(key))
		switch {
		case err == nil:
			return kvState{present: true, val: v}
		case errors.Is(err, heapkv.ErrNotFound):
			return kvState{}
		}
		t.Fatalf("%s: Get(%q): %v", label, key, err)
		return kvState{}
	}
	same := func(a, b kvState) bool { return a.present == b.present && bytes.Equal(a.val, b.val) }
	old := func(key string) kvState {
		if v := r.acked[key]; v > 0 {
			return pcState(key, round, v)
		}
		return prev[key]
	}
	got := map[string]kvState{}
	present := int64(0)
	for key := range prev {
		got[key] = get(key)
		if got[key].present {
			present++
		}
	}
	inFlight := map[string]bool{}
	for g, op := range r.inflight {
		allOld, allNew := true, true
		for i, key := range op.keys {
			inFlight[key] = true
			allOld = allOld && same(got[key], old(key))
			allNew = allNew && same(got[key], pcState(key, round, op.vers[i]))
		}
		if !allOld && !allNew {
			var b strings.Builder
			for i, key := range op.keys {
				fmt.Fprintf(&b, "\n  %s: holds %v; acknowledged %v; in flight (v%d) %v",
					key, got[key], old(key), op.vers[i], pcState(key, round, op.vers[i]))
			}
			t.Fatalf("%s: writer %d's unacknowledged op %d is partly applied:%s", label, g, op.seq, b.String())
		}
		if allNew && !allOld {
			shown++
		}
	}
	for key := range prev {
		if !inFlight[key] && !same(got[key], old(key)) {
			t.Fatalf("%s: key %s holds %v, want %v (acknowledged v%d)", label, key, got[key], old(key), r.acked[key])
		}
	}
	rep, err := db.Check(context.Background())
	if err != nil {
		t.Fatalf("%s: Check: %v\n%v", label, err, rep)
	}
	if rep.Keys != present {
		t.Fatalf("%s: Check counts %d keys, the writers' keys show %d", label, rep.Keys, present)
	}
	for k, s := range got {
		prev[k] = s
	}
	if testing.Verbose() {
		t.Logf("%s: ok; %d keys, %d heap values verified", label, rep.Keys, rep.ValuesVerified)
	}
	return shown
}

// copyDirTree copies the regular files and directories under src to dst.
func copyDirTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
