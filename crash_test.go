// Crash enumeration: DESIGN "How it is tested", invariants 3 and 7.
//
// CI run (>= 2,000 crash states; -short: >= 300):
//
//	go test -race -run TestCrash -count=1 .
//
// Long run (100,000+ crash states; every further workload seed adds ~600):
//
//	go test -run TestCrashEnumeration -count=1 -timeout 0 -heapkv.crashstates=100000 .
//
// A workload (a seeded, planned sequence of Put, Delete, batches through
// NewBatch/Apply, synced and Sync:false writes, Sync and Checkpoint calls,
// in four option variants) runs once on a vfs.CrashableMem seen through a
// testfs wrapper that numbers every write-class file system operation. Just
// before each operation k the wrapper takes CrashClones of the file system
// as a crash at that instant could leave it: one keeping exactly the synced
// data (UnsyncedDataPercent 0; taken only when a sync happened since the
// last such clone, since it cannot differ otherwise) and one keeping a
// random share of the unsynced data. Taking a clone does not disturb the
// running workload, so one run enumerates every crash point k = 1..N; this
// is equivalent to rerunning the workload and crashing it at each k, and N
// times cheaper. Each clone is reopened and must hold exactly the model
// state after some prefix of the commit order that includes every write
// acknowledged as durable before the crash; Check must pass (no leak,
// dangling or doubly referenced block, exact counters); a third of them
// then take more writes and a clean close and reopen. For a fifth of the
// clones the recovery itself is crashed too (at write ops of Open+Close
// picked at random) and each result must recover to the very state the
// uninterrupted recovery found.
package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/internal/testfs"
)

var crashStatesFlag = flag.Int("heapkv.crashstates", 0,
	"minimum number of crash states TestCrashEnumeration verifies (0: 2000, or 300 with -short or -race)")

const crashDir = "db"

// crashLogger drops the engine's log lines (torn tails, recoveries: all
// expected here).
var crashLogger = slog.New(slog.DiscardHandler)

// crashReadAll reads every key in keys; absent keys are left out.
func crashReadAll(db *heapkv.DB, keys []string) (map[string][]byte, error) {
	got := map[string][]byte{}
	for _, k := range keys {
		v, err := db.Get([]byte(k))
		switch {
		case errors.Is(err, heapkv.ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("get %q: %w", k, err)
		default:
			got[k] = v
		}
	}
	return got, nil
}

func crashSameState(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}

// crashStateDiff describes how got differs from want.
func crashStateDiff(got, want map[string][]byte) string {
	var d []string
	keys := slices.Sorted(maps.Keys(want))
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		g, gok := got[k]
		v, wok := want[k]
		switch {
		case !gok:
			d = append(d, fmt.Sprintf("%s missing (want %d bytes)", k, len(v)))
		case !wok:
			d = append(d, fmt.Sprintf("%s present (%d bytes), want absent", k, len(g)))
		case !bytes.Equal(g, v):
			d = append(d, fmt.Sprintf("%s has %d bytes, want %d (differ)", k, len(g), len(v)))
		}
	}
	return fmt.Sprint(d)
}

// crashCheckDB runs Check and compares its key count and Stats with keys.
func crashCheckDB(db *heapkv.DB, keys int) error {
	rep, err := db.Check(context.Background())
	if err != nil {
		if rep != nil {
			return fmt.Errorf("check: %w\n%s", err, rep)
		}
		return fmt.Errorf("check: %w", err)
	}
	if rep.Keys != int64(keys) || rep.LeakedBlocks != 0 || rep.DanglingBlocks != 0 || rep.DoubleRefBlocks != 0 {
		return fmt.Errorf("check: want %d keys, no leaks, got\n%s", keys, rep)
	}
	st, err := db.Stats()
	if err != nil {
		return err
	}
	if st.Keys != int64(keys) {
		return fmt.Errorf("stats: %d keys, want %d", st.Keys, keys)
	}
	return nil
}

// crashState is one crash clone and the model states it may hold.
type crashState struct {
	name   string
	fs     *vfs.MemFS
	lo, hi int  // w.states[lo..hi] are acceptable
	post   bool // write more after recovery, close, reopen
	nested bool // also crash the recovery of this clone
	seed   uint64
}

// crashTally counts what the verifications saw.
type crashTally struct {
	states     atomic.Int64 // crash states verified (nested ones included)
	nested     atomic.Int64 // of which taken during a recovery
	beyond     atomic.Int64 // recovered a write that was not known durable
	lostTail   atomic.Int64 // lost a write that had started (not durable)
	mu         sync.Mutex
	errs       []string
	failedOnce atomic.Bool
}

func (c *crashTally) fail(err error) {
	c.failedOnce.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) < 5 {
		c.errs = append(c.errs, err.Error())
	}
}

// crashPostKeys are written after recovery to show the database still works.
var crashPostKeys = []string{"post-heap", "post-inline"}

// verify reopens one crash clone and checks invariants 3 and 7.
func (w *crashWorkload) verify(cs crashState, tally *crashTally) error {
	var exact *vfs.MemFS
	if cs.nested {
		exact = cs.fs.CrashClone(vfs.CrashCloneCfg{}) // everything in a clone is synced
	}
	opts := w.opts
	heapkv.SetFS(&opts, cs.fs)
	db, err := heapkv.Open(crashDir, &opts)
	if err != nil {
		return fmt.Errorf("%s: open after crash: %w", cs.name, err)
	}
	keys := append(slices.Clone(w.keys), crashPostKeys...)
	got, err := crashReadAll(db, keys)
	if err != nil {
		db.Close()
		return fmt.Errorf("%s: writes %d..%d (%s) may or may not be there: %w",
			cs.name, cs.lo+1, cs.hi, w.window(cs.lo, cs.hi), err)
	}
	p := -1
	for i := cs.hi; i >= cs.lo; i-- {
		if crashSameState(got, w.states[i]) {
			p = i
			break
		}
	}
	if p < 0 {
		db.Close()
		best, bestDiff := cs.lo, ""
		for i := max(0, cs.lo-3); i <= min(len(w.states)-1, cs.hi+3); i++ {
			if d := crashStateDiff(got, w.states[i]); bestDiff == "" || len(d) < len(bestDiff) {
				best, bestDiff = i, d
			}
		}
		return fmt.Errorf("%s: recovered state is not the state after any of writes %d..%d (%s; %d acknowledged durable); nearest is after write %d: %s",
			cs.name, cs.lo, cs.hi, w.window(cs.lo, cs.hi), cs.lo, best, bestDiff)
	}
	if p > cs.lo {
		tally.beyond.Add(1)
	}
	if p < cs.hi {
		tally.lostTail.Add(1)
	}
	if err := crashCheckDB(db, len(got)); err != nil {
		db.Close()
		return fmt.Errorf("%s: after recovery to the state after write %d: %w", cs.name, p, err)
	}
	if !cs.post {
		if err := db.Close(); err != nil {
			return fmt.Errorf("%s: close after recovery: %w", cs.name, err)
		}
	} else {
		// More writes, a clean close and a reopen.
		rng := rand.New(rand.NewPCG(cs.seed, 7))
		post := maps.Clone(got)
		post["post-heap"] = crashBytes(rng, 700+rng.IntN(3000))
		post["post-inline"] = crashBytes(rng, 1+rng.IntN(40))
		var del string
		for _, k := range w.keys {
			if _, ok := post[k]; ok {
				del = k
				break
			}
		}
		err = errors.Join(db.Put([]byte("post-heap"), post["post-heap"]), db.Put([]byte("post-inline"), post["post-inline"]))
		if del != "" {
			delete(post, del)
			err = errors.Join(err, db.Delete([]byte(del)))
		}
		if err != nil {
			db.Close()
			return fmt.Errorf("%s: writes after recovery: %w", cs.name, err)
		}
		if err := db.Close(); err != nil {
			return fmt.Errorf("%s: close after recovery: %w", cs.name, err)
		}
		if err := crashReopenAndCompare(cs.fs, opts, keys, post); err != nil {
			return fmt.Errorf("%s: reopen after post-recovery writes: %w", cs.name, err)
		}
	}
	if cs.nested {
		return w.verifyNested(cs, exact, opts, keys, got, tally)
	}
	return nil
}

// crashReopenAndCompare opens the database on fs, compares it with want, runs
// Check and closes it.
func crashReopenAndCompare(fs vfs.FS, opts heapkv.Options, keys []string, want map[string][]byte) error {
	heapkv.SetFS(&opts, fs)
	db, err := heapkv.Open(crashDir, &opts)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	got, err := crashReadAll(db, keys)
	if err == nil && !crashSameState(got, want) {
		err = fmt.Errorf("state differs: %s", crashStateDiff(got, want))
	}
	if err == nil {
		err = crashCheckDB(db, len(want))
	}
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

// crashNestedPerState is how many crash points of one recovery are verified.
const crashNestedPerState = 2

// verifyNested crashes the recovery (Open then Close) of an exact copy of a
// crash state at random write ops and checks that each result recovers to
// want, the state the uninterrupted recovery found.
func (w *crashWorkload) verifyNested(cs crashState, exact *vfs.MemFS, opts heapkv.Options, keys []string, want map[string][]byte, tally *crashTally) error {
	rng := rand.New(rand.NewPCG(cs.seed, 11))
	var (
		mu     sync.Mutex
		seen   int
		picked []crashState // reservoir sample of the recovery's crash points
	)
	hook := func(op testfs.Op) {
		mu.Lock()
		defer mu.Unlock()
		seen++
		slot := seen - 1
		if seen > crashNestedPerState {
			if slot = rng.IntN(seen); slot >= crashNestedPerState {
				return
			}
		}
		cfg := vfs.CrashCloneCfg{}
		if slot%2 == 1 {
			cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 1 + rng.IntN(99), RNG: rng}
		}
		c := crashState{
			name: fmt.Sprintf("%s/recovery-op%d(%v %s, %d%% unsynced kept)", cs.name, op.N, op.Kind, op.Path, cfg.UnsyncedDataPercent),
			fs:   exact.CrashClone(cfg),
		}
		if slot < len(picked) {
			picked[slot] = c
		} else {
			picked = append(picked, c)
		}
	}
	fs := testfs.WrapSerial(exact, hook)
	heapkv.SetFS(&opts, fs)
	db, err := heapkv.Open(crashDir, &opts)
	if err != nil {
		return fmt.Errorf("%s: reopen of an exact copy: %w", cs.name, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("%s: close of an exact copy: %w", cs.name, err)
	}
	for _, c := range picked {
		if err := crashReopenAndCompare(c.fs, opts, keys, want); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		tally.states.Add(1)
		tally.nested.Add(1)
	}
	return nil
}

// runCrashSeed runs one workload, enumerating and verifying its crash
// states on parallel workers.
func runCrashSeed(t *testing.T, w *crashWorkload, tally *crashTally) (ops int64) {
	mem := vfs.NewCrashableMem()
	var pr crashProgress
	states := make(chan crashState, 2)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cs := range states {
				if tally.failedOnce.Load() {
					continue // drain: one failure is enough to report
				}
				if err := w.verify(cs, tally); err != nil {
					tally.fail(err)
					continue
				}
				tally.states.Add(1)
			}
		}()
	}

	var (
		mu          sync.Mutex
		syncs       int64 // sync ops started
		syncsAtZero int64 = -1
	)
	hook := func(op testfs.Op) {
		// lockDir calls Lock while holding heapkv's process-wide table of
		// open directories, which a verifier's Open needs: do not block
		// there. (The state before Lock equals the one after MkdirAll.)
		// Variants with a stride skip the other ops but count their syncs.
		if op.Kind == testfs.Lock || op.N%w.stride != 0 {
			if op.Kind.IsSync() {
				mu.Lock()
				syncs++
				mu.Unlock()
			}
			return
		}
		mu.Lock()
		takeZero := syncs != syncsAtZero
		syncsAtZero = syncs
		if op.Kind.IsSync() {
			syncs++
		}
		mu.Unlock()
		lo := int(pr.durable.Load())
		rng := rand.New(rand.NewPCG(w.seed, uint64(op.N)))
		pct := 1 + rng.IntN(99)
		var zero *vfs.MemFS
		if takeZero {
			zero = mem.CrashClone(vfs.CrashCloneCfg{})
		}
		some := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
		hi := int(pr.started.Load())
		name := fmt.Sprintf("seed %d (%s) crash before op %d (%v %s)", w.seed, w.variant, op.N, op.Kind, op.Path)
		if zero != nil {
			states <- crashState{name: name + " keeping no unsynced data", fs: zero, lo: lo, hi: hi,
				post: rng.IntN(3) == 0, nested: rng.IntN(5) == 0, seed: rng.Uint64()}
		}
		states <- crashState{name: fmt.Sprintf("%s keeping %d%% of unsynced data", name, pct), fs: some, lo: lo, hi: hi,
			post: rng.IntN(3) == 0, nested: rng.IntN(5) == 0, seed: rng.Uint64()}
	}
	fs := testfs.WrapSerial(mem, hook)
	err := w.run(fs, &pr)
	close(states)
	wg.Wait()
	if err != nil {
		t.Fatalf("seed %d (%s): workload: %v", w.seed, w.variant, err)
	}
	return fs.Ops()
}

func TestCrashEnumeration(t *testing.T) {
	target := *crashStatesFlag
	if target <= 0 {
		target = 2000
		if testing.Short() || heapkv.RaceEnabled {
			target = 300 // CI runs 20,000 without the race detector
		}
	}
	writes := 32
	var tally crashTally
	start := time.Now()
	seed := uint64(0)
	for ; tally.states.Load() < int64(target) && !tally.failedOnce.Load(); seed++ {
		w := newCrashWorkload(seed, writes)
		before, t0 := tally.states.Load(), time.Now()
		ops := runCrashSeed(t, w, &tally)
		t.Logf("seed %d (%s): %d writes, %d file system write ops, %d crash states in %v",
			seed, w.variant, writes, ops, tally.states.Load()-before, time.Since(t0).Round(time.Millisecond))
	}
	for _, e := range tally.errs {
		t.Error(e)
	}
	if t.Failed() {
		return
	}
	t.Logf("%d crash states (%d during recovery) from %d workload seeds in %v; %d recovered writes not known durable, %d lost writes not yet durable",
		tally.states.Load(), tally.nested.Load(), seed, time.Since(start).Round(time.Millisecond), tally.beyond.Load(), tally.lostTail.Load())
	// The enumeration must reach the interesting cases, or it proves little.
	if tally.beyond.Load() == 0 || tally.lostTail.Load() == 0 || tally.nested.Load() == 0 {
		t.Errorf("crash states never recovered an undurable write (%d), never lost one (%d) or never crashed a recovery (%d)",
			tally.beyond.Load(), tally.lostTail.Load(), tally.nested.Load())
	}
}
