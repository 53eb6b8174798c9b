//go:build linux

package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// Process crashes of NoSync writers (kill -9): what the log's buffer held
// is lost, nothing else.
//
// The child (TestNoSyncKillChild) writes from several goroutines, each
// write a new key, most of them NoSync and one in nsSyncEvery synced. It
// prints a line before each write (I: writer, sequence, synced or not)
// and after it is acknowledged (A), one write(2) per line under one
// mutex, so the order of the lines is an order the writes were issued and
// acknowledged in: a write acknowledged before another was announced
// committed before it. The parent kills the child with SIGKILL and
// reopens its directory. Then:
//   - every acknowledged synced write is there;
//   - what is missing of the acknowledged writes is a suffix of the
//     commit order: no write present was announced after a missing one
//     was acknowledged;
//   - the missing acknowledged writes are within the documented bound (at
//     most the log's buffer, 64 KiB plus a commit group, of records; and
//     acknowledged at most nsMaxAge before the kill: NoSyncWriteDelay plus
//     the time a write can wait for the log);
//   - Check passes.
//
//	go test -run NoSyncKill -heapkv.nosynckills=20 .

var nsKills = flag.Int("heapkv.nosynckills", 4, "NoSync process crash test: rounds of start, kill -9, verify")

const (
	nsEnvDir  = "HEAPKV_NOSYNCKILL_DIR"
	nsEnvSeed = "HEAPKV_NOSYNCKILL_SEED"

	nsWriters   = 4
	nsSyncEvery = 16 // one write in this many is synced
	// nsWriteDelay is the child's NoSyncWriteDelay: longer than the
	// default, so that most kills find records in the buffer.
	nsWriteDelay = 10 * time.Millisecond
	// nsMaxAge bounds how long before the kill a lost write can have been
	// acknowledged: the delay, plus a write that waits for a rotation's
	// flush, plus scheduling on a loaded machine. Generous on purpose.
	nsMaxAge = 5 * time.Second
	// nsMaxLostBytes bounds the log record bytes of the lost writes: the
	// buffer (wal.DefaultBufferSize) plus one group's records.
	nsMaxLostBytes = 64<<10 + nsWriters*2<<10
)

func nsKey(g, seq int) string { return fmt.Sprintf("n%d-%07d", g, seq) }

// nsValue is the value of key: its length (mostly inline, one in ten in
// the heap) and bytes derive from the key alone.
func nsValue(key string) []byte {
	h := fnv.New64a()
	h.Write([]byte(key))
	rng := rand.New(rand.NewPCG(h.Sum64(), 0x5EED))
	n := 50 + rng.IntN(1000)
	if rng.IntN(10) == 0 {
		n = 3000 + rng.IntN(3000)
	}
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(rng.Uint32())
	}
	copy(v, key)
	return v
}

// nsRecordBytes estimates the log record bytes of a write of key: its
// value if inline (InlineThreshold 2 KiB), a pointer otherwise, and about
// 64 bytes of framing and op header.
func nsRecordBytes(key string) int {
	n := len(key) + 64
	if v := nsValue(key); len(v) <= heapkv.DefaultInlineThreshold {
		n += len(v)
	}
	return n
}

func nsOptions() *heapkv.Options {
	return &heapkv.Options{
		NoSync:             true,
		NoSyncWriteDelay:   nsWriteDelay,
		NoSyncFlushBytes:   4 << 20,
		LogSegmentSize:     1 << 20,
		CheckpointLogBytes: 4 << 20,
		IndexMemTableSize:  1 << 20,
		IndexCacheSize:     4 << 20,
		Logger:             slog.New(slog.DiscardHandler),
	}
}

// TestNoSyncKillChild is the child: it writes until killed. It does
// nothing unless started by TestNoSyncKill.
func TestNoSyncKillChild(t *testing.T) {
	dir := os.Getenv(nsEnvDir)
	if dir == "" {
		t.Skip("child of TestNoSyncKill only")
	}
	seed, _ := strconv.ParseUint(os.Getenv(nsEnvSeed), 10, 64)
	emit, die := childIO()
	db, err := heapkv.Open(dir, nsOptions())
	if err != nil {
		die("open: %v", err)
	}
	emit("R\n")
	for g := range nsWriters {
		go func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			for seq := 1; ; seq++ {
				synced := rng.IntN(nsSyncEvery) == 0
				key := nsKey(g, seq)
				emit(fmt.Sprintf("I %d %d %t\n", g, seq, synced))
				var b heapkv.Batch
				b.Put([]byte(key), nsValue(key))
				if err := db.Apply(&b, &heapkv.WriteOptions{Sync: synced}); err != nil {
					die("apply: %v", err)
				}
				emit(fmt.Sprintf("A %d %d\n", g, seq))
			}
		}()
	}
	time.Sleep(2 * time.Minute)
	die("not killed within 2 minutes")
}

// nsWrite is one write the child announced.
type nsWrite struct {
	g, seq    int
	synced    bool
	announced int       // position of its I line
	acked     int       // position of its A line; 0 if none
	ackedAt   time.Time // when the parent read the A line
}

// nsRound is what the parent read from one child.
type nsRound struct {
	ready  bool
	lines  int
	acks   int
	writes map[[2]int]*nsWrite
}

func (r *nsRound) parse(line string) error {
	r.lines++
	f := strings.Fields(line)
	if len(f) == 1 && f[0] == "R" {
		r.ready = true
		return nil
	}
	if len(f) < 3 || (f[0] != "I" && f[0] != "A") {
		return fmt.Errorf("unexpected line %q", line)
	}
	g, err1 := strconv.Atoi(f[1])
	seq, err2 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("line %q: %w", line, err)
	}
	id := [2]int{g, seq}
	if f[0] == "I" {
		if len(f) != 4 {
			return fmt.Errorf("short line %q", line)
		}
		r.writes[id] = &nsWrite{g: g, seq: seq, synced: f[3] == "true", announced: r.lines}
		return nil
	}
	w := r.writes[id]
	if w == nil || w.acked != 0 {
		return fmt.Errorf("writer %d acknowledged write %d, which it did not announce", g, seq)
	}
	w.acked, w.ackedAt = r.lines, time.Now()
	r.acks++
	return nil
}

func TestNoSyncKill(t *testing.T) {
	if os.Getenv(nsEnvDir) != "" {
		t.Skip("in the child")
	}
	seed := *killSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-heapkv.killseed to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 0x45C))
	var lostRounds, lostTotal, maxLostBytes int
	var maxAge time.Duration
	rounds := *nsKills
	if heapkv.RaceEnabled && !flagSet("heapkv.nosynckills") {
		rounds = 2 // each round is a child process: many times slower under the race detector
	}
	for round := range rounds {
		dir := filepath.Join(t.TempDir(), "db")
		r := &nsRound{writes: map[[2]int]*nsWrite{}}
		env := []string{nsEnvDir + "=" + dir, nsEnvSeed + "=" + strconv.FormatUint(seed+uint64(round), 10)}
		label := fmt.Sprintf("round %d", round)
		killedAt := killChild(t, label, "TestNoSyncKillChild", env, 500+rng.IntN(20000), 30*time.Second,
			func(line string) (int, error) { err := r.parse(line); return r.acks, err })
		lost, lostBytes, age := nsVerify(t, dir, label, r, killedAt)
		if lost > 0 {
			lostRounds++
		}
		lostTotal += lost
		maxLostBytes, maxAge = max(maxLostBytes, lostBytes), max(maxAge, age)
	}
	t.Logf("%d rounds, %d lost acknowledged NoSync writes in %d of them; at most %d record bytes, acknowledged at most %v before the kill",
		*nsKills, lostTotal, lostRounds, maxLostBytes, maxAge)
}

// nsVerify reopens dir after round r's child was killed and checks it
// (see above). It returns how many acknowledged writes were lost, their
// estimated log record bytes, and how long before the kill the oldest of
// them was acknowledged.
func nsVerify(t *testing.T, dir, label string, r *nsRound, killedAt time.Time) (lost, lostBytes int, oldest time.Duration) {
	t.Helper()
	if !r.ready {
		t.Fatalf("%s: killed before the child opened the database", label)
	}
	db := openTestDB(t, dir, nsOptions())
	defer func() {
		if err := db.Close(); err != nil {
			t.Errorf("%s: close: %v", label, err)
		}
	}()
	present := func(w *nsWrite) bool {
		key := nsKey(w.g, w.seq)
		v, err := db.Get([]byte(key))
		switch {
		case errors.Is(err, heapkv.ErrNotFound):
			return false
		case err != nil:
			t.Fatalf("%s: Get(%s): %v", label, key, err)
		case !bytes.Equal(v, nsValue(key)):
			t.Fatalf("%s: Get(%s): %d bytes, not the value written", label, key, len(v))
		}
		return true
	}
	lastPresent := 0 // the latest announcement of a write that is there
	var missing []*nsWrite
	var keys int64
	for _, w := range r.writes {
		if present(w) {
			lastPresent = max(lastPresent, w.announced)
			keys++
			continue
		}
		if w.acked == 0 {
			continue // never acknowledged: may or may not be there
		}
		if w.synced {
			t.Fatalf("%s: acknowledged synced write %s is missing", label, nsKey(w.g, w.seq))
		}
		missing = append(missing, w)
	}
	for _, w := range missing {
		if w.acked < lastPresent {
			t.Fatalf("%s: acknowledged NoSync write %s (line %d) is missing, but a write announced after it (line %d) is there: not a suffix of the commit order",
				label, nsKey(w.g, w.seq), w.acked, lastPresent)
		}
		lostBytes += nsRecordBytes(nsKey(w.g, w.seq))
		oldest = max(oldest, killedAt.Sub(w.ackedAt))
	}
	if lostBytes > nsMaxLostBytes {
		t.Fatalf("%s: %d acknowledged NoSync writes lost, about %d bytes of log records; the buffer bounds it to %d",
			label, len(missing), lostBytes, nsMaxLostBytes)
	}
	if oldest > nsMaxAge {
		t.Fatalf("%s: a lost write was acknowledged %v before the kill; NoSyncWriteDelay is %v", label, oldest, nsWriteDelay)
	}
	rep, err := db.Check(context.Background())
	if err != nil {
		t.Fatalf("%s: Check: %v\n%v", label, err, rep)
	}
	if rep.Keys != keys {
		t.Fatalf("%s: Check counts %d keys, the writers' keys show %d", label, rep.Keys, keys)
	}
	if testing.Verbose() {
		t.Logf("%s: %d acks, %d keys, %d acknowledged writes lost (%d record bytes, oldest acknowledged %v before the kill)",
			label, r.acks, keys, len(missing), lostBytes, oldest)
	}
	return len(missing), lostBytes, oldest
}
