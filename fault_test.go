package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv"
)

// I/O fault injection. Every test here runs the database on an errorfs over
// a crashable MemFS, makes one file operation fail, and then proves the
// contract of DESIGN "Bad input and errors" and invariant 3:
//
//   - the write during which the fault hit returns an error (it is not
//     acknowledged);
//   - later writes succeed, or, after a log or heap sync failure, fail with
//     an error wrapping ErrFailed (and change nothing);
//   - acknowledged data stays readable;
//   - reopening the underlying files with injection off (after Close, and
//     from crash clones taken right after the fault) succeeds, holds every
//     acknowledged write, holds each failed write either whole or not at
//     all, and passes Check.

var faultSweepFull = flag.Bool("heapkv.faultsweep", false, "fault sweep: fail every write-class op index instead of a sample")

const faultDir = "db"

// faultOptions are small-geometry options that make values span blocks,
// extents and segments, and the log rotate, within a few dozen writes.
func faultOptions(fs vfs.FS) *heapkv.Options {
	o := &heapkv.Options{
		BlockSize:          512,
		SegmentSize:        64 * 512,
		InlineThreshold:    64,
		LogSegmentSize:     64 << 10,
		CheckpointLogBytes: -1, // checkpoints only where the workload asks
		IndexCacheSize:     1 << 20,
		IndexMemTableSize:  1 << 20,
		Cursors:            2,
		Logger:             slog.New(slog.DiscardHandler),
	}
	heapkv.SetFS(o, fs)
	return o
}

// --- the model -------------------------------------------------------------

// kvState is a key's value, or its absence.
type kvState struct {
	present bool
	val     []byte
}

func (s kvState) String() string {
	if !s.present {
		return "absent"
	}
	return fmt.Sprintf("%d bytes %x", len(s.val), s.val[:min(len(s.val), 8)])
}

// kvModel tracks, per key, the states a recovered database may show: the
// last acknowledged one first, then those of writes that failed after it
// (each may or may not have reached the log).
type kvModel map[string][]kvState

func (m kvModel) ack(key string, s kvState)  { m[key] = []kvState{s} }
func (m kvModel) fail(key string, s kvState) { m[key] = append(m.cands(key), s) }

func (m kvModel) cands(key string) []kvState {
	if c, ok := m[key]; ok {
		return c
	}
	return []kvState{{}}
}

// verify checks every key the model knows against db and that the index
// holds no other keys (via Check's key count); it returns how many of the
// keys showed a failed write rather than the acknowledged state.
func (m kvModel) verify(t testing.TB, db *heapkv.DB, label string) (failedShown int) {
	t.Helper()
	present := int64(0)
	for key, cands := range m {
		v, err := db.Get([]byte(key))
		var got kvState
		switch {
		case err == nil:
			got = kvState{present: true, val: v}
			present++
		case errors.Is(err, heapkv.ErrNotFound):
		default:
			t.Fatalf("%s: Get(%q): %v", label, key, err)
		}
		i := slicesIndexFunc(cands, func(s kvState) bool {
			return s.present == got.present && bytes.Equal(s.val, got.val)
		})
		if i < 0 {
			t.Fatalf("%s: key %q holds %v; acknowledged %v, possible after failures %v", label, key, got, cands[0], cands[1:])
		}
		if i > 0 {
			failedShown++
		}
	}
	rep, err := db.Check(context.Background())
	if err != nil {
		t.Fatalf("%s: Check: %v\n%v", label, err, rep)
	}
	if rep.Keys != present {
		t.Fatalf("%s: Check counts %d keys, the model's keys show %d", label, rep.Keys, present)
	}
	return failedShown
}

func slicesIndexFunc[T any](s []T, f func(T) bool) int {
	for i := range s {
		if f(s[i]) {
			return i
		}
	}
	return -1
}

// --- workload --------------------------------------------------------------

const (
	wPut = iota
	wDelete
	wBatch
	wCheckpoint
)

// wOp is one step of a workload.
type wOp struct {
	kind  int
	key   string
	val   []byte
	batch []wOp // for wBatch: puts and deletes
}

func (o wOp) String() string {
	switch o.kind {
	case wPut:
		return fmt.Sprintf("put %s (%d bytes)", o.key, len(o.val))
	case wDelete:
		return "delete " + o.key
	case wBatch:
		return fmt.Sprintf("batch of %d", len(o.batch))
	default:
		return "checkpoint"
	}
}

var faultValueSizes = []int{0, 7, 64, 65, 300, 512, 513, 1500, 4000, 9000, 40000}

// faultGenValue returns a value of a random size (heapOnly: always a heap value).
func faultGenValue(rng *rand.Rand, heapOnly bool) []byte {
	n := faultValueSizes[rng.IntN(len(faultValueSizes))]
	if heapOnly && n <= 64 {
		n = 65 + rng.IntN(3000)
	}
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(rng.Uint32())
	}
	return v
}

// faultGenOp returns a random write over keys k00..k{nkeys-1}.
func faultGenOp(rng *rand.Rand, nkeys int, heapOnly bool) wOp {
	key := func() string { return fmt.Sprintf("k%02d", rng.IntN(nkeys)) }
	switch r := rng.IntN(20); {
	case r < 2 && !heapOnly:
		return wOp{kind: wDelete, key: key()}
	case r < 4:
		b := wOp{kind: wBatch}
		used := map[string]bool{}
		for range 2 + rng.IntN(3) {
			k := key()
			if used[k] {
				continue
			}
			used[k] = true
			if rng.IntN(4) == 0 && !heapOnly {
				b.batch = append(b.batch, wOp{kind: wDelete, key: k})
			} else {
				b.batch = append(b.batch, wOp{kind: wPut, key: k, val: faultGenValue(rng, heapOnly)})
			}
		}
		return b
	default:
		return wOp{kind: wPut, key: key(), val: faultGenValue(rng, heapOnly)}
	}
}

// apply runs a write op on db.
func (o wOp) apply(db *heapkv.DB) error {
	switch o.kind {
	case wPut:
		return db.Put([]byte(o.key), o.val)
	case wDelete:
		return db.Delete([]byte(o.key))
	case wBatch:
		var b heapkv.Batch
		for _, x := range o.batch {
			if x.kind == wPut {
				b.Put([]byte(x.key), x.val)
			} else {
				b.Delete([]byte(x.key))
			}
		}
		return db.Apply(&b, nil)
	default:
		return db.Checkpoint()
	}
}

// record notes o's outcome in the model: acknowledged or failed.
func (m kvModel) record(o wOp, acked bool) {
	ops := o.batch
	if o.kind != wBatch {
		ops = []wOp{o}
	}
	for _, x := range ops {
		s := kvState{present: x.kind == wPut, val: x.val}
		if acked {
			m.ack(x.key, s)
		} else {
			m.fail(x.key, s)
		}
	}
}

// reopenAndVerify opens the database on fs (no injection), checks it against
// m, proves it takes writes again, and closes it.
func reopenAndVerify(t testing.TB, fs vfs.FS, m kvModel, label string) (failedShown int) {
	t.Helper()
	db := openTestDB(t, faultDir, faultOptions(fs))
	failedShown = m.verify(t, db, label)
	probe := []byte("after-reopen")
	val := bytes.Repeat([]byte{0xA5}, 700)
	if err := db.Put(probe, val); err != nil {
		t.Fatalf("%s: put after reopen: %v", label, err)
	}
	if got, err := db.Get(probe); err != nil || !bytes.Equal(got, val) {
		t.Fatalf("%s: get after reopen: %v", label, err)
	}
	if err := db.Delete(probe); err != nil {
		t.Fatalf("%s: delete after reopen: %v", label, err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("%s: close after reopen: %v", label, err)
	}
	return failedShown
}

// --- (a)-(d): one targeted fault ---------------------------------------------

// TestFaultInjection fails one write or sync of the heap or of the log while
// a Put runs, checks the error contract on the live database, and recovers
// after Close and from crash clones.
func TestFaultInjection(t *testing.T) {
	cases := []struct {
		name  string
		match func(op errorfs.Op) bool
		// sticky: after the fault every write fails with ErrFailed.
		sticky bool
		// heapFirst: values are not carried in the log (Options.CarryLimit
		// -1), so every durable group flushes the heap before the log.
		heapFirst bool
	}{
		{"heap-write", func(op errorfs.Op) bool {
			return op.Kind == errorfs.OpFileWriteAt && op.Path == faultHeapPath
		}, false, false},
		{"heap-sync", func(op errorfs.Op) bool {
			return isSyncOp(op.Kind) && op.Path == faultHeapPath
		}, true, true},
		{"wal-write", func(op errorfs.Op) bool {
			return (op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileWriteAt) && inWAL(op.Path)
		}, true, false},
		{"wal-sync", func(op errorfs.Op) bool {
			return isSyncOp(op.Kind) && inWAL(op.Path)
		}, true, false},
	}
	for _, c := range cases {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/seed=%d", c.name, seed), func(t *testing.T) {
				runTargetedFault(t, seed, c.match, c.sticky, c.heapFirst)
			})
		}
	}
}

func runTargetedFault(t *testing.T, seed uint64, match func(errorfs.Op) bool, sticky, heapFirst bool) {
	rng := rand.New(rand.NewPCG(seed, 0xFA17))
	mem := vfs.NewCrashableMem()
	inj := newInjector(injectRule{match: match, limit: 1})
	opts := faultOptions(errorfs.Wrap(mem, inj))
	if heapFirst {
		opts.CarryLimit = -1
	}
	db := openTestDBNoCheck(t, faultDir, opts)
	m := kvModel{}
	const nkeys = 24
	// Acknowledged history, with a checkpoint in the middle so that recovery
	// starts from a snapshot and replays the rest.
	for i := range 60 {
		o := faultGenOp(rng, nkeys, false)
		if i == 30 {
			o = wOp{kind: wCheckpoint}
		}
		if err := o.apply(db); err != nil {
			t.Fatalf("before the fault: %v: %v", o, err)
		}
		if o.kind != wCheckpoint {
			m.record(o, true)
		}
	}

	// Arm, and write until the fault hits; that write must fail.
	inj.armed.Store(true)
	var faulted wOp
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("the fault never hit: the test exercises nothing")
		}
		o := faultGenOp(rng, nkeys, true)
		inj.setPhase(o.String())
		err := o.apply(db)
		if len(inj.firedOps()) > 0 {
			if err == nil {
				t.Fatalf("%v was acknowledged although %v failed", o, inj.firedOps()[0])
			}
			t.Logf("fault %v -> %v: %v", inj.firedOps()[0], o, err)
			m.record(o, false)
			faulted = o
			break
		}
		if err != nil {
			t.Fatalf("%v failed before the fault: %v", o, err)
		}
		m.record(o, true)
	}

	// Later writes: all succeed, or all fail with ErrFailed and change
	// nothing.
	for range 15 {
		o := faultGenOp(rng, nkeys, false)
		err := o.apply(db)
		switch {
		case sticky && !errors.Is(err, heapkv.ErrFailed):
			t.Fatalf("after the fault, %v returned %v, want ErrFailed", o, err)
		case !sticky && err != nil:
			t.Fatalf("after a fault that leaves the database usable, %v failed: %v", o, err)
		case err == nil:
			m.record(o, true)
		}
	}
	if sticky {
		if err := db.Checkpoint(); !errors.Is(err, heapkv.ErrFailed) {
			t.Fatalf("Checkpoint after the fault: %v, want ErrFailed", err)
		}
	}
	// Acknowledged data stays readable on the live handle.
	m.verify(t, db, "live, after the fault")

	// Crash now (two clones: only synced data; half of the unsynced data),
	// then close the live handle (which may fail) and reopen each.
	crash0 := mem.CrashClone(vfs.CrashCloneCfg{})
	crash50 := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng})
	inj.setPhase("close")
	if err := db.Close(); err != nil {
		t.Logf("Close after the fault: %v", err)
	}
	shown := 0
	shown += reopenAndVerify(t, mem, m, "reopen after Close")
	shown += reopenAndVerify(t, crash0, m, "crash clone (synced only)")
	shown += reopenAndVerify(t, crash50, m, "crash clone (50% unsynced)")
	t.Logf("failed write %v: its keys show it %d times over the 3 recoveries", faulted, shown)
}

// --- (e): the nth write-class op, swept --------------------------------------

// sweepCountable reports whether the sweep counts (and may fail) op: every
// write-class operation, the index's own MANIFEST and marker files included
// (Pebble treats a failure there as fatal; heapkv fails and fences the
// index, and reopening recovers from the previous MANIFEST).
func sweepCountable(op errorfs.Op) bool {
	return op.Kind.ReadOrWrite() == errorfs.OpIsWrite
}

// sweepWorkload is the fixed sequence of steps every sweep iteration runs.
func sweepWorkload() []wOp {
	rng := rand.New(rand.NewPCG(7, 7))
	var ops []wOp
	for i := range 36 {
		switch i {
		case 12, 30:
			ops = append(ops, wOp{kind: wCheckpoint})
		default:
			ops = append(ops, faultGenOp(rng, 10, false))
		}
	}
	return ops
}

// TestFaultSweep fails the nth write-class file operation of a workload
// (open, puts, deletes, batches, checkpoints, close) for n across the whole
// run (a spread sample by default; every n with -heapkv.faultsweep).
func TestFaultSweep(t *testing.T) {
	total := runSweep(t, -1)
	if total < 50 {
		t.Fatalf("dry run counted only %d write ops", total)
	}
	stride := 1
	if !*faultSweepFull {
		stride = max(1, total/40)
		if testing.Short() || heapkv.RaceEnabled {
			stride = max(1, total/15)
		}
	}
	runs := 0
	for n := 0; n < total; n += stride {
		runSweep(t, n)
		runs++
	}
	t.Logf("%d write-class ops per run; injected at %d of them (stride %d)", total, runs, stride)
}

// runSweep runs the workload failing write op n (n < 0: none, and returns
// how many countable write ops the run made).
func runSweep(t *testing.T, n int) int {
	t.Helper()
	label := fmt.Sprintf("sweep n=%d", n)
	var count atomic.Int64
	inj := newInjector(injectRule{limit: 1, match: func(op errorfs.Op) bool {
		return sweepCountable(op) && count.Add(1)-1 == int64(n)
	}})
	inj.armed.Store(true)
	mem := vfs.NewCrashableMem()
	m := kvModel{}
	rng := rand.New(rand.NewPCG(uint64(n+1), 99))

	inj.setPhase("open")
	db, err := heapkv.Open(faultDir, faultOptions(errorfs.Wrap(mem, inj)))
	var crash *vfs.MemFS
	if err != nil {
		if len(inj.firedOps()) == 0 {
			t.Fatalf("%s: Open failed with no fault: %v", label, err)
		}
		crash = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
	} else {
		failedErr := false // some write returned ErrFailed
		for i, o := range sweepWorkload() {
			before := len(inj.firedOps())
			inj.setPhase(fmt.Sprintf("step %d: %v", i, o))
			err := o.apply(db)
			fired := inj.firedOps()
			if o.kind == wCheckpoint {
				if err != nil && before == len(fired) && !errors.Is(err, heapkv.ErrFailed) {
					t.Fatalf("%s: %v failed with no new fault: %v", label, o, err)
				}
				if errors.Is(err, heapkv.ErrFailed) {
					failedErr = true
				}
				continue
			}
			switch {
			case failedErr && !errors.Is(err, heapkv.ErrFailed):
				t.Fatalf("%s: %v returned %v after an earlier ErrFailed", label, o, err)
			case err == nil:
				m.record(o, true)
			case errors.Is(err, heapkv.ErrFailed):
				if len(fired) == 0 {
					t.Fatalf("%s: %v: ErrFailed with no fault: %v", label, o, err)
				}
				// A write refused by an earlier failure changed nothing;
				// the write whose own fault failed the database may have
				// reached the log, and so may the first write to see
				// ErrFailed: the index reports its faults from Pebble's
				// background work, so the database may fail while a
				// write's record is being appended, steps after the fault
				// fired.
				if len(fired) > before || !failedErr {
					m.record(o, false)
				}
				failedErr = true
			default:
				if before == len(fired) {
					t.Fatalf("%s: %v failed with no new fault (earlier: %v): %v", label, o, fired, err)
				}
				m.record(o, false)
			}
			if len(fired) > before {
				f := fired[before]
				heapkvFile := f.op.Path == faultHeapPath || inWAL(f.op.Path)
				if heapkvFile && err == nil {
					t.Fatalf("%s: %v was acknowledged although %v failed", label, o, f)
				}
				// A failed log write or sync, or heap sync, leaves the
				// database refusing writes; a failed heap write does not.
				if heapkvFile && (inWAL(f.op.Path) || isSyncOp(f.op.Kind)) {
					failedErr = true
				}
			}
		}
		if n >= 0 {
			m.verify(t, db, label+": live")
		}
		crash = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
		inj.setPhase("close")
		if err := db.Close(); err != nil && len(inj.firedOps()) == 0 {
			t.Fatalf("%s: Close failed with no fault: %v", label, err)
		}
	}
	if n < 0 {
		return int(count.Load())
	}
	if len(inj.firedOps()) == 0 {
		return 0 // n is past the end of this run (background ops vary)
	}
	desc := fmt.Sprintf("%s (%v)", label, inj.firedOps()[0])
	reopenAndVerify(t, mem, m, desc+": reopen after Close")
	reopenAndVerify(t, crash, m, desc+": crash clone")
	return 0
}
