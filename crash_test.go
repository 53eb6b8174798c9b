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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/internal/testfs"
)

var crashStatesFlag = flag.Int("heapkv.crashstates", 0,
	"minimum number of crash states TestCrashEnumeration verifies (0: 2000, or 300 with -short)")

const crashDir = "db"

// crashLogger drops the engine's log lines (torn tails, recoveries: all
// expected here).
var crashLogger = slog.New(slog.DiscardHandler)

type crashStepKind uint8

const (
	crashStepWrite crashStepKind = iota
	crashStepCheckpoint
	crashStepSync
)

// crashOp is one write inside a crashStep.
type crashOp struct {
	del bool
	key string
	val []byte
}

// crashStep is one call the workload makes.
type crashStep struct {
	kind   crashStepKind
	ops    []crashOp
	batch  bool // through db.NewBatch + db.Apply even if one op
	noSync bool // WriteOptions{Sync: false}
}

// crashWorkload is a planned sequence of calls and the model state after
// each write: states[i] is the database after the first i writes.
type crashWorkload struct {
	seed    uint64
	variant string
	opts    heapkv.Options // without the FS
	steps   []crashStep
	stride  int64 // crash before every stride-th write op only (recoveries of this variant are slow)
	states  []map[string][]byte
	noSync  []bool   // noSync[i]: write i+1 was made with Sync false
	keys    []string // every key the plan writes
}

// crashOptions returns the geometry shared by every variant: tiny blocks,
// segments, memtables and log files so that a short workload allocates
// across segments, rotates logs and (variant "bigInline") fills memtables.
func crashOptions() heapkv.Options {
	return heapkv.Options{
		BlockSize:          512,
		SegmentSize:        64 * 512,
		IndexMemTableSize:  1 << 20,
		LogSegmentSize:     64 << 10,
		InlineThreshold:    64,
		CheckpointLogBytes: -1,
		ValueCacheSize:     -1, // a 64 MiB ristretto cache costs more to make and clear than a small reopen
		Logger:             crashLogger,
	}
}

// newCrashWorkload plans the workload for seed. The variant (seed mod 4)
// shifts the load: small inline threshold with explicit checkpoints; a 4 KiB
// inline threshold; background checkpoints every 8 KiB of log; large inline
// values that make Pebble flush memtables on its own (invariant 2) and roll
// log files.
func newCrashWorkload(seed uint64, writes int) *crashWorkload {
	rng := rand.New(rand.NewPCG(seed, 0x6b76637261736821))
	w := &crashWorkload{seed: seed, opts: crashOptions(), stride: 1}
	size := crashValueSize
	switch seed % 4 {
	case 0:
		w.variant = "inline64"
		w.opts.Cursors = 1 // freed blocks are reused soon
	case 1:
		w.variant = "inline4K"
		w.opts.InlineThreshold = 4 << 10
		w.opts.ValueCacheSize = 1 << 20
	case 2:
		w.variant = "bgCheckpoints"
		w.opts.CheckpointLogBytes = 8 << 10
		w.opts.Cursors = 1
	case 3:
		w.variant = "bigInline"
		w.stride = 6 // every recovery replays megabytes of log
		w.opts.InlineThreshold = 64 << 10
		size = func(rng *rand.Rand) int {
			if rng.IntN(5) == 0 {
				return crashValueSize(rng)
			}
			return 32<<10 + rng.IntN(32<<10)
		}
	}
	noSyncOneIn := 4
	if w.variant == "bigInline" {
		noSyncOneIn = 2 // memtables often fill up with writes not yet durable (invariant 2)
	}
	const nkeys = 12
	for i := range nkeys {
		w.keys = append(w.keys, fmt.Sprintf("key-%02d", i))
	}
	cur := map[string][]byte{}
	w.states = append(w.states, maps.Clone(cur))
	ckpt1, ckpt2 := writes/3, 2*writes/3+rng.IntN(writes/4+1)
	if w.variant == "bigInline" {
		ckpt1 = -1 // let the memtable fill up and Pebble flush on its own
	}
	for i := range writes {
		if i == ckpt1 || i == ckpt2 {
			w.steps = append(w.steps, crashStep{kind: crashStepCheckpoint})
		}
		if rng.IntN(25) == 0 {
			w.steps = append(w.steps, crashStep{kind: crashStepSync})
		}
		s := crashStep{kind: crashStepWrite, noSync: rng.IntN(noSyncOneIn) == 0}
		n := 1
		if rng.IntN(6) == 0 {
			n = 2 + rng.IntN(4)
			s.batch = true
		}
		for range n {
			op := crashOp{key: w.keys[rng.IntN(nkeys)]}
			if len(s.ops) > 0 && rng.IntN(2) == 0 {
				op.key = s.ops[len(s.ops)-1].key // overwrite within the batch
			}
			if rng.IntN(5) == 0 {
				op.del = true
			} else {
				op.val = crashBytes(rng, size(rng))
			}
			s.ops = append(s.ops, op)
		}
		s.batch = s.batch || s.noSync || rng.IntN(3) == 0
		for _, op := range s.ops {
			if op.del {
				delete(cur, op.key)
			} else {
				cur[op.key] = op.val
			}
		}
		w.steps = append(w.steps, s)
		w.states = append(w.states, maps.Clone(cur))
		w.noSync = append(w.noSync, s.noSync)
	}
	return w
}

// window describes writes lo+1..hi, the ones a crash state may or may not
// hold: "s" for synced, "n" for Sync false.
func (w *crashWorkload) window(lo, hi int) string {
	b := make([]byte, 0, hi-lo)
	for i := lo; i < hi; i++ {
		if w.noSync[i] {
			b = append(b, 'n')
		} else {
			b = append(b, 's')
		}
	}
	return string(b)
}

// crashValueSize draws a value size: empty, inline, one block, a few
// blocks, many blocks, and now and then about a whole 32 KiB segment or
// more (a value split over segments).
func crashValueSize(rng *rand.Rand) int {
	switch r := rng.IntN(100); {
	case r < 8:
		return 0
	case r < 30:
		return 1 + rng.IntN(64)
	case r < 55:
		return 65 + rng.IntN(512-65)
	case r < 80:
		return 513 + rng.IntN(3*512)
	case r < 96:
		return 2048 + rng.IntN(8<<10)
	default:
		return 24<<10 + rng.IntN(24<<10)
	}
}

func crashBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := i; j < min(i+8, n); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	return b
}

// crashProgress is what the running workload has done, read by the crash hook.
type crashProgress struct {
	started atomic.Int64 // writes whose call has begun
	durable atomic.Int64 // writes known durable: synced acks, Sync, Checkpoint
}

func (w *crashWorkload) applyStep(db *heapkv.DB, s *crashStep) error {
	switch s.kind {
	case crashStepCheckpoint:
		return db.Checkpoint()
	case crashStepSync:
		return db.Sync()
	}
	if !s.batch {
		op := s.ops[0]
		if op.del {
			return db.Delete([]byte(op.key))
		}
		return db.Put([]byte(op.key), op.val)
	}
	b := db.NewBatch()
	for _, op := range s.ops {
		if op.del {
			b.Delete([]byte(op.key))
		} else {
			b.Put([]byte(op.key), op.val)
		}
	}
	var wo *heapkv.WriteOptions
	if s.noSync {
		wo = &heapkv.WriteOptions{Sync: false}
	} else if len(s.ops)%2 == 0 {
		wo = &heapkv.WriteOptions{Sync: true}
	}
	return db.Apply(b, wo)
}

// run executes the plan on fs, keeping pr up to date, and checks the live
// database against the model at the end (so a wrong model cannot pass).
func (w *crashWorkload) run(fs vfs.FS, pr *crashProgress) error {
	opts := w.opts
	heapkv.SetFS(&opts, fs)
	db, err := heapkv.Open(crashDir, &opts)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	for i := range w.steps {
		s := &w.steps[i]
		var n int64
		if s.kind == crashStepWrite {
			n = pr.started.Add(1)
		}
		if err := w.applyStep(db, s); err != nil {
			db.Close()
			return fmt.Errorf("crashStep %d: %w", i, err)
		}
		switch {
		case s.kind != crashStepWrite:
			pr.durable.Store(pr.started.Load())
		case !s.noSync:
			pr.durable.Store(n)
		}
	}
	got, err := crashReadAll(db, w.keys)
	if err == nil && !crashSameState(got, w.states[len(w.states)-1]) {
		err = fmt.Errorf("live database differs from the model: %s", crashStateDiff(got, w.states[len(w.states)-1]))
	}
	if err == nil {
		err = crashCheckDB(db, len(got))
	}
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	pr.durable.Store(pr.started.Load())
	return err
}

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
	fs := testfs.Wrap(exact, hook)
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
	fs := testfs.Wrap(mem, hook)
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
		if testing.Short() {
			target = 300
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

// crashCopyFile replaces path in dst by its contents in src, durably.
func crashCopyFile(src, dst vfs.FS, path string) error {
	f, err := src.Open(path)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	f.Close()
	if err != nil && st.Size() > 0 {
		return err
	}
	g, err := dst.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := g.Write(b); err != nil {
		g.Close()
		return err
	}
	if err := g.Sync(); err != nil {
		g.Close()
		return err
	}
	if err := g.Close(); err != nil {
		return err
	}
	d, err := dst.OpenDir(dst.PathDir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// crashFileBytes returns the contents of path on fs (nil if absent).
func crashFileBytes(fs vfs.FS, path string) []byte {
	f, err := fs.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	b := make([]byte, st.Size())
	f.ReadAt(b, 0)
	return b
}

// TestCrashReusedSupersededValue: a synced batch writes a heap value and
// overwrites it in the same record, which frees the value's blocks; once
// the record is synced they are reused by the next (NoSync) write. The
// crash keeps that write's heap blocks (the OS wrote them back) but not its
// log record, so no record on disk vouches that the batch was synced. The
// batch was acknowledged as durable and must survive: recovery may not
// judge its record by a value that the record itself superseded.
//
// (Recovery that reads back every heap value of the records no later
// record vouches for finds the reused blocks, takes the acknowledged batch
// for a torn tail and drops it.)
func TestCrashReusedSupersededValue(t *testing.T) {
	for attempt := 0; ; attempt++ {
		if crashReusedSupersededValue(t) {
			return
		}
		if attempt == 5 {
			t.Fatal("a background sync made every attempt's NoSync write durable; the crash state never arose")
		}
	}
}

// crashReusedSupersededValue runs the scenario once; it returns false when
// the NoSync write became durable before the crash (nothing was tested).
func crashReusedSupersededValue(t *testing.T) bool {
	mem := vfs.NewCrashableMem()
	opts := crashOptions()
	opts.Cursors = 1 // one segment at a time: freed blocks are reused at once
	heapkv.SetFS(&opts, mem)
	db, err := heapkv.Open(crashDir, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	fill := crashBytes(rng, 52*512) // blocks 0..51 of the 64-block segment
	v := crashBytes(rng, 12*512)    // blocks 52..63
	next := crashBytes(rng, 12*512) // must reuse 52..63
	if err := db.Put([]byte("fill"), fill); err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	b.Put([]byte("k"), v)
	b.Put([]byte("k"), []byte("final"))
	if err := db.Apply(b, &heapkv.WriteOptions{Sync: true}); err != nil {
		t.Fatal(err)
	}
	b = db.NewBatch()
	b.Put([]byte("next"), next)
	if err := db.Apply(b, &heapkv.WriteOptions{Sync: false}); err != nil {
		t.Fatal(err)
	}
	synced := mem.CrashClone(vfs.CrashCloneCfg{})
	all := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rng})
	heapPath := crashDir + "/heap"
	if bytes.Equal(crashFileBytes(synced, heapPath), crashFileBytes(all, heapPath)) {
		return false // a background sync got there first
	}
	// The crash: the heap as the OS last had it, the log as last synced.
	if err := crashCopyFile(all, synced, heapPath); err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"fill": fill, "k": []byte("final")}
	if err := crashReopenAndCompare(synced, opts, []string{"fill", "k", "next"}, want); err != nil {
		t.Fatalf("acknowledged synced batch lost after a crash: %v", err)
	}
	return true
}

// TestCrashIndexFlushAheadOfLog targets invariant 2: NoSync writes of large
// inline values fill Pebble's memtable until it flushes on its own; the
// crash comes right after the flushed table is durable (Pebble synced its
// MANIFEST), keeping only synced data. Whatever the index holds must be
// backed by a durable log record: the recovered state is a prefix that
// passes Check with exact counters.
func TestCrashIndexFlushAheadOfLog(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts := crashOptions()
	opts.InlineThreshold = 64 << 10
	opts.LogSegmentSize = 16 << 20 // no rotation (which syncs) while the memtable fills
	var (
		pr              crashProgress
		mu              sync.Mutex
		sawTable, armed bool
		clone           *vfs.MemFS
		lo, hi          int
	)
	fs := testfs.Wrap(mem, func(op testfs.Op) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case clone != nil:
		case armed:
			lo = int(pr.durable.Load())
			clone = mem.CrashClone(vfs.CrashCloneCfg{})
			hi = int(pr.started.Load())
		case op.Kind == testfs.Create && strings.HasSuffix(op.Path, ".sst"):
			sawTable = true
		case sawTable && op.Kind.IsSync() && strings.Contains(op.Path, "index/MANIFEST-"):
			armed = true // the flush is installed once this sync returns
		}
	})
	heapkv.SetFS(&opts, fs)
	db, err := heapkv.Open(crashDir, &opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	states := []map[string][]byte{{}}
	cur := map[string][]byte{}
	keys := []string{}
	for i := 0; ; i++ {
		mu.Lock()
		done := clone != nil
		mu.Unlock()
		if done {
			break
		}
		if i == 200 {
			t.Fatal("Pebble never flushed a memtable on its own")
		}
		k := fmt.Sprintf("f%04d", i%40)
		if i < 40 {
			keys = append(keys, k)
		}
		v := crashBytes(rng, 40<<10+rng.IntN(20<<10))
		n := pr.started.Add(1)
		b := db.NewBatch()
		b.Put([]byte(k), v)
		sync := i == 0
		if err := db.Apply(b, &heapkv.WriteOptions{Sync: sync}); err != nil {
			t.Fatal(err)
		}
		if sync {
			pr.durable.Store(n)
		}
		cur[k] = v
		states = append(states, maps.Clone(cur))
	}
	w := &crashWorkload{seed: 5, variant: "flushAheadOfLog", opts: opts, states: states, keys: keys,
		noSync: make([]bool, len(states))}
	for i := range w.noSync {
		w.noSync[i] = i != 0
	}
	var tally crashTally
	if err := w.verify(crashState{name: "crash after Pebble's own flush", fs: clone, lo: lo, hi: hi, post: true, seed: 1}, &tally); err != nil {
		t.Fatal(err)
	}
}
