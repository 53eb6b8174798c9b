//go:build linux

package heapkv_test

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// Disk full on a real file system (issue 11). Each scenario runs in a child
// process on a small loop-mounted ext4 image that the parent made (see
// loopfs_test.go): a panic on a Pebble goroutine ends the child, not the
// test binary, and the parent unmounts and reports it. Every step that
// could hang runs under a watchdog (within).
//
// The contract: a write the full disk refuses returns an error wrapping
// ErrDiskFull and syscall.ENOSPC, and the database fails (later writes:
// ErrFailed); Sync, Checkpoint and Close return (with such an error or
// none); reopening on the still-full disk succeeds, serves reads and takes
// deletes (the space reserve, Options.DiskReserve, pays for what they
// write); a checkpoint then gives log space back and writes reuse the heap
// blocks the deletes freed. No acknowledged write is lost, Check is clean.
//
//	sudo go test -race -run 'DiskFullExt4|CheckpointCloseNearlyFull' -v .

const (
	dfEnvDir  = "HEAPKV_DISKFULL_DIR"  // the mount point; set for a child
	dfEnvFree = "HEAPKV_DISKFULL_FREE" // TestCheckpointCloseNearlyFull: blocks to leave free

	dfImageSize = 64 << 20
	dfDBName    = "db"
)

// dfOptions are small sizes so that the scenario fits a 64 MiB image and
// still rotates the log, checkpoints and flushes the index on its own.
func dfOptions() *heapkv.Options {
	return &heapkv.Options{
		SegmentSize:        1 << 20,
		LogSegmentSize:     1 << 20,
		CheckpointLogBytes: 4 << 20,
		IndexMemTableSize:  1 << 20,
		IndexCacheSize:     4 << 20,
		Cursors:            2,
		DiskReserve:        8 << 20,
		Logger:             slog.New(childLog),
	}
}

// dfValue is version ver of key's value: n bytes that differ between any
// two keys and versions.
func dfValue(key string, ver, n int) []byte {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%d", key, ver)
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(n)))
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(rng.Uint32())
	}
	copy(v, fmt.Sprintf("%s|%d|", key, ver))
	return v
}

// dfSize draws a value size: inline (100 B), or a heap value of 8 or 40 KiB.
func dfSize(rng *rand.Rand) int {
	switch r := rng.IntN(20); {
	case r < 9:
		return 100
	case r < 17:
		return 8 << 10
	default:
		return 40 << 10
	}
}

// diskFull reports whether err says what the contract promises for a write
// the full disk refused.
func diskFull(err error) bool {
	return errors.Is(err, heapkv.ErrDiskFull) && errors.Is(err, syscall.ENOSPC)
}

// allowedOnFullDisk reports whether err is an outcome the contract allows
// for an operation on a full disk: none, disk full, or failed.
func allowedOnFullDisk(err error) bool {
	return err == nil || diskFull(err) || errors.Is(err, heapkv.ErrFailed)
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return fmt.Sprintf("error (ErrDiskFull %v, ENOSPC %v, ErrFailed %v): %v",
		errors.Is(err, heapkv.ErrDiskFull), errors.Is(err, syscall.ENOSPC), errors.Is(err, heapkv.ErrFailed), err)
}

// dfRun is a child's scenario state: the mount, the database and the model
// of every write it made.
type dfRun struct {
	t    *testing.T
	mnt  string
	path string
	db   *heapkv.DB

	mu    sync.Mutex // guards model and vers (writers run concurrently)
	model kvModel
	vers  map[string]int

	peak int64                // blocks the last step needed at its peak
	low  int64                // fewest free blocks a step saw
	size func(*rand.Rand) int // draws load's value sizes
}

func newDFRun(t *testing.T, mnt string) *dfRun {
	return &dfRun{t: t, mnt: mnt, path: filepath.Join(mnt, dfDBName), model: kvModel{}, vers: map[string]int{}, size: dfSize, low: 1 << 62}
}

// note prints one line of the scenario's progress. The child writes these
// itself (not t.Logf), so that the only file:line lines in its output are
// its errors (see childOutcome).
func (r *dfRun) note(format string, args ...any) {
	fmt.Printf("  | "+format+"\n", args...)
}

func (r *dfRun) free() int64 {
	n, err := freeBlocks(r.mnt)
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}

// step runs fn under the watchdog and notes its outcome with the file
// system's free blocks before, after, and at the lowest seen meanwhile
// (statfs sampled every millisecond). It returns fn's error and sets
// r.peak to the blocks fn needed at its peak (before - lowest).
func (r *dfRun) step(what string, fn func() error) error {
	return r.stepFor(*stepTimeout, what, fn)
}

// longStep is step for a phase of many operations, each under its own
// watchdog: the phase as a whole gets ten steps' time.
func (r *dfRun) longStep(what string, fn func() error) error {
	return r.stepFor(10**stepTimeout, what, fn)
}

func (r *dfRun) stepFor(d time.Duration, what string, fn func() error) error {
	before := r.free()
	var low atomic.Int64
	low.Store(before)
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if n, err := freeBlocks(r.mnt); err == nil && n < low.Load() {
				low.Store(n)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	err := withinFor(d, what, fn)
	close(stop)
	<-sampled
	after := r.free()
	lowest := min(low.Load(), after)
	r.note("%-34s %6.2fs  free blocks %5d -> %5d (lowest %5d, peak need %4d = %6.2f MiB): %s",
		what, time.Since(start).Seconds(), before, after, lowest, before-lowest,
		float64((before-lowest)*fsBlock)/(1<<20), errText(err))
	r.peak = before - lowest
	r.low = min(r.low, lowest)
	return err
}

// open opens the database under the watchdog; it must succeed.
func (r *dfRun) open(what string, opts *heapkv.Options) {
	var db *heapkv.DB
	err := r.step(what, func() (err error) {
		db, err = heapkv.Open(r.path, opts)
		return err
	})
	if err != nil {
		r.t.Fatalf("%s: %v", what, err)
	}
	r.db = db
}

// closeDB closes the database under the watchdog; Close may fail only as
// the contract allows on a full disk.
func (r *dfRun) closeDB(what string) {
	err := r.step(what, r.db.Close)
	r.db = nil
	if !allowedOnFullDisk(err) {
		r.t.Errorf("%s: %v; want nil or an error wrapping ErrDiskFull and ENOSPC, or ErrFailed", what, err)
	}
}

// verify checks every key of the model against the open database, and
// Check (kvModel.verify), under the watchdog.
func (r *dfRun) verify(what string) {
	var uncertain int
	if err := r.longStep(what, func() error {
		uncertain = r.model.verify(r.t, r.db, what)
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
	r.note("  %d keys verified; %d show a write that failed rather than the acknowledged state", len(r.model), uncertain)
}

// put writes version next of key, n bytes, synced, under the watchdog, and
// records the outcome in the model: acknowledged, or uncertain (the key may
// hold the old or the new value).
func (r *dfRun) put(key string, n int) error {
	r.mu.Lock()
	r.vers[key]++
	val := dfValue(key, r.vers[key], n)
	r.mu.Unlock()
	err := within("Put "+key, func() error { return r.db.Put([]byte(key), val) })
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.model.ack(key, kvState{present: true, val: val})
	} else {
		r.model.fail(key, kvState{present: true, val: val})
	}
	return err
}

// del deletes key under the watchdog and records the outcome.
func (r *dfRun) del(key string) error {
	err := within("Delete "+key, func() error { return r.db.Delete([]byte(key)) })
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.model.ack(key, kvState{})
	} else {
		r.model.fail(key, kvState{})
	}
	return err
}

// load writes from writers goroutines, each its own keys (one in eight
// writes overwrites an earlier key), every Put synced, until a Put fails
// or, if limit > 0, limit bytes were written. It returns the writes
// acknowledged and the errors of those that failed.
func (r *dfRun) load(prefix string, writers int, limit int64) (acked int64, errs []error) {
	var stop atomic.Bool
	var nacked atomic.Int64
	var written atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(len(prefix))))
			var mine []string
			for !stop.Load() {
				key := fmt.Sprintf("%s%d-%06d", prefix, g, len(mine))
				if len(mine) > 0 && rng.IntN(8) == 0 {
					key = mine[rng.IntN(len(mine))]
				} else {
					mine = append(mine, key)
				}
				n := r.size(rng)
				if err := r.put(key, n); err != nil {
					stop.Store(true)
					mu.Lock()
					errs = append(errs, fmt.Errorf("Put %s (%d bytes): %w", key, n, err))
					mu.Unlock()
					return
				}
				nacked.Add(1)
				if written.Add(int64(n)) >= limit && limit > 0 {
					stop.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return nacked.Load(), errs
}

// TestDiskFullExt4 fills a 64 MiB ext4 image through heapkv until writes
// fail, then runs Put, Delete, Sync, Checkpoint and Close on the full disk,
// reopens on the still-full disk, verifies every acknowledged write,
// deletes most keys, checkpoints, writes again, and verifies after a final
// reopen. The notes give the free blocks around every step.
func TestDiskFullExt4(t *testing.T) {
	mnt := os.Getenv(dfEnvDir)
	if mnt == "" {
		runScenarioChild(t, "TestDiskFullExt4", dfEnvDir+"="+mountExt4(t, dfImageSize))
		return
	}
	r := newDFRun(t, mnt)
	t.Cleanup(childLog.summary)
	r.open("Open (new)", dfOptions())

	// Fill the disk.
	var acked int64
	var errs []error
	if err := r.longStep("load until a write fails", func() error {
		acked, errs = r.load("k", 4, 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(errs) == 0 {
		t.Fatal("no write failed")
	}
	r.note("%d writes acknowledged, %d failed; %d keys", acked, len(errs), len(r.model))
	sawDiskFull := false
	for _, err := range errs {
		r.note("  failed: %s", errText(err))
		sawDiskFull = sawDiskFull || diskFull(err)
		if !allowedOnFullDisk(err) {
			t.Errorf("write on the full disk: %v; want an error wrapping ErrDiskFull and ENOSPC (or ErrFailed)", err)
		}
	}
	if !sawDiskFull {
		t.Errorf("no write failure wraps both ErrDiskFull and syscall.ENOSPC: %v", errs)
	}

	// On the full disk: every call returns, with an allowed outcome.
	keys := r.keys()
	for _, s := range []struct {
		what string
		fn   func() error
	}{
		{"Put inline (disk full)", func() error { return r.put("full-inline", 100) }},
		{"Put 40 KiB (disk full)", func() error { return r.put("full-heap", 40<<10) }},
		{"Delete (disk full)", func() error { return r.del(keys[0]) }},
		{"Sync (disk full)", r.db.Sync},
		{"Checkpoint (disk full)", r.db.Checkpoint},
	} {
		if err := r.step(s.what, s.fn); !allowedOnFullDisk(err) {
			t.Errorf("%s: %v; want nil or an error wrapping ErrDiskFull and ENOSPC, or ErrFailed", s.what, err)
		}
	}
	r.closeDB("Close (disk full)")

	// Reopen on the still-full disk, read everything, delete most keys.
	r.open("Open (disk still full)", dfOptions())
	r.verify("verify after reopen on full disk")
	var deleted, freed int64
	if err := r.longStep("Delete 3 keys in 5 (disk full)", func() error {
		for i, k := range r.keys() {
			if i%5 >= 3 {
				continue
			}
			cands := r.model.cands(k)
			if err := r.del(k); err != nil {
				return fmt.Errorf("Delete %s: %w", k, err)
			}
			deleted++
			if len(cands[0].val) > 2048 {
				freed += int64(len(cands[0].val))
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("deletes after reopening on the full disk: %v", err)
	}
	r.note("deleted %d keys, freeing about %.1f MiB of heap values", deleted, float64(freed)/(1<<20))
	if err := r.step("Checkpoint after deletes", r.db.Checkpoint); err != nil {
		t.Fatalf("Checkpoint after deleting on the full disk: %v", err)
	}

	// Write again: these reuse the freed heap blocks and the log space the
	// checkpoint gave back; every one of them must succeed.
	if err := r.longStep("32 writes after the checkpoint", func() error {
		for i := range 32 {
			n := 100
			if i%2 == 1 {
				n = 8 << 10
			}
			if err := r.put(fmt.Sprintf("again-%03d", i), n); err != nil {
				return fmt.Errorf("write %d of 32 (%d bytes): %w", i+1, n, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("writing after deletes and a checkpoint freed space: %v", err)
	}
	// Then more, up to a quarter of what the deletes freed: these may fail
	// only as the contract allows.
	if freed/4 >= 64<<10 {
		var more int64
		if err := r.longStep("more writes, up to 1/4 of freed", func() error {
			more, errs = r.load("again", 2, freed/4)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		r.note("then %d more writes acknowledged; failures: %v", more, errs)
		for _, err := range errs {
			if !allowedOnFullDisk(err) {
				t.Errorf("write after the checkpoint: %v; want an error wrapping ErrDiskFull and ENOSPC (or ErrFailed)", err)
			}
		}
	}
	r.closeDB("Close")
	r.open("Open (final)", dfOptions())
	r.verify("verify after final reopen")
	r.closeDB("Close (final)")
}

// keys returns the model's keys in order.
func (r *dfRun) keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ks := make([]string, 0, len(r.model))
	for k := range r.model {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestCheckpointCloseNearlyFull writes some data, fills the file system to
// leave exactly k blocks free (k = 0..16), and runs Checkpoint and Close
// there; both must return. Then it removes the filler, reopens and
// verifies every acknowledged write. Each k runs on a fresh image.
func TestCheckpointCloseNearlyFull(t *testing.T) {
	if mnt := os.Getenv(dfEnvDir); mnt != "" {
		k, err := strconv.ParseInt(os.Getenv(dfEnvFree), 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", dfEnvFree, err)
		}
		nearlyFull(t, mnt, k)
		return
	}
	needLoopMount(t)
	for k := range 17 {
		if heapkv.RaceEnabled && k&(k-1) != 0 {
			continue // 0, 1, 2, 4, 8 and 16 blocks free: each child is slow under the race detector
		}
		t.Run(fmt.Sprintf("free=%d", k), func(t *testing.T) {
			runScenarioChild(t, "TestCheckpointCloseNearlyFull",
				dfEnvDir+"="+mountExt4(t, dfImageSize), fmt.Sprintf("%s=%d", dfEnvFree, k))
		})
	}
}

func nearlyFull(t *testing.T, mnt string, k int64) {
	r := newDFRun(t, mnt)
	t.Cleanup(childLog.summary)
	r.open("Open (new)", dfOptions())
	if err := r.longStep("load 4 MiB", func() error {
		if _, errs := r.load("k", 2, 4<<20); len(errs) > 0 {
			return errors.Join(errs...)
		}
		return nil
	}); err != nil {
		t.Fatalf("writing with room to spare: %v", err)
	}
	filler, err := fillTo(mnt, k)
	if err != nil {
		t.Fatal(err)
	}
	r.note("filled: %d blocks free", r.free())
	if err := r.step(fmt.Sprintf("Checkpoint (%d blocks free)", k), r.db.Checkpoint); !allowedOnFullDisk(err) {
		t.Errorf("Checkpoint with %d blocks free: %v; want nil or an error wrapping ErrDiskFull and ENOSPC, or ErrFailed", k, err)
	}
	r.closeDB(fmt.Sprintf("Close (%d blocks free)", k))
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	r.open("Open (filler removed)", dfOptions())
	r.verify("verify")
	r.closeDB("Close (final)")
}
