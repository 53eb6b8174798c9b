package heapkv_test

// Crash tests aimed at the windows that carried values open: a durable
// write's heap blocks reach the disk only at the next checkpoint, so a
// crash may keep the log record and lose the heap write; recovery rewrites
// the value from the record (possibly crashing again while it does); a
// replica that missed the rewrite is brought up to date by a resync.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/internal/testfs"
)

// carryWorkload writes durable values of mixed sizes over a few keys
// (inline, carried heap values, and values above CarryLimit that go heap
// first), with overwrites and deletes so that freed blocks are reused,
// and returns what the database holds.
func carryWorkload(t *testing.T, db *heapkv.DB, rng *rand.Rand, writes int) map[string][]byte {
	t.Helper()
	model := map[string][]byte{}
	for i := range writes {
		k := fmt.Sprintf("k%02d", rng.IntN(10))
		if rng.IntN(8) == 0 {
			if err := db.Delete([]byte(k)); err != nil {
				t.Fatal(err)
			}
			delete(model, k)
			continue
		}
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 1 + rng.IntN(60) // inline
		case 1:
			n = 3000 + rng.IntN(3000) // above CarryLimit: heap first
		default:
			n = 100 + rng.IntN(1900) // carried
		}
		v := crashBytes(rng, n)
		v[0] = byte(i)
		if err := db.Put([]byte(k), v); err != nil {
			t.Fatal(err)
		}
		model[k] = v
	}
	return model
}

// carriedTail ends a workload with durable writes of carried values only:
// a heap-first value flushes the heap, and with it every carried value
// before it.
func carriedTail(t *testing.T, db *heapkv.DB, rng *rand.Rand, model map[string][]byte) {
	t.Helper()
	for i := range 5 {
		k, v := fmt.Sprintf("k%02d", i), crashBytes(rng, 500+rng.IntN(1500))
		if err := db.Put([]byte(k), v); err != nil {
			t.Fatal(err)
		}
		model[k] = v
	}
}

// carriedMissing counts the live carried values of model (larger than
// inline, at most CarryLimit) that fs's heap file does not hold.
func carriedMissing(fs vfs.FS, model map[string][]byte) int {
	heap := crashFileBytes(fs, crashDir+"/heap")
	missing := 0
	for _, v := range model {
		if len(v) > 64 && len(v) <= 2048 && !bytes.Contains(heap, v) {
			missing++
		}
	}
	return missing
}

func carryOptions(fs vfs.FS) *heapkv.Options {
	o := crashOptions()
	o.Cursors = 1 // freed blocks are reused at once
	o.CarryLimit = 2048
	heapkv.SetFS(&o, fs)
	return &o
}

// carryVerify opens fs and checks that it holds exactly model.
func carryVerify(t *testing.T, fs vfs.FS, model map[string][]byte, label string) {
	t.Helper()
	db, err := heapkv.Open(crashDir, carryOptions(fs))
	if err != nil {
		t.Fatalf("%s: open: %v", label, err)
	}
	defer db.Close()
	for k := range 10 {
		key := fmt.Sprintf("k%02d", k)
		got, err := db.Get([]byte(key))
		want, ok := model[key]
		switch {
		case !ok && err == nil:
			t.Fatalf("%s: %s present, want absent", label, key)
		case ok && (err != nil || !bytes.Equal(got, want)):
			t.Fatalf("%s: %s: %v (%d bytes, want %d)", label, key, err, len(got), len(want))
		}
	}
	if err := crashCheckDB(db, len(model)); err != nil {
		t.Fatalf("%s: %v", label, err)
	}
}

// TestCarryCrashBeforeHeapWriteBack: every write was acknowledged durable
// and no checkpoint ran since, so the heap blocks of the carried values
// were never flushed. A crash that keeps none (or some) of the unsynced
// heap data must still recover every value, from the log.
func TestCarryCrashBeforeHeapWriteBack(t *testing.T) {
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 0xCA881ED))
		mem := vfs.NewCrashableMem()
		db, err := heapkv.Open(crashDir, carryOptions(mem))
		if err != nil {
			t.Fatal(err)
		}
		carryWorkload(t, db, rng, 40)
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		model := carryWorkload(t, db, rng, 60)
		carriedTail(t, db, rng, model)
		// The window exists: some live carried value is not in the heap
		// file of a crash that keeps no unsynced data.
		lost := mem.CrashClone(vfs.CrashCloneCfg{})
		missing := carriedMissing(lost, model)
		if missing == 0 {
			t.Fatalf("seed %d: every carried value reached the heap before the crash: the test exercises nothing", seed)
		}
		carryVerify(t, lost, model, fmt.Sprintf("seed %d, no unsynced data (%d carried values missing from the heap)", seed, missing))
		for _, pct := range []int{30, 70} {
			some := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
			carryVerify(t, some, model, fmt.Sprintf("seed %d, %d%% of unsynced data", seed, pct))
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCarryCrashDuringRedo crashes recovery itself at each of its
// write-class operations (the rewrite of carried values included), then
// recovers again from that state.
func TestCarryCrashDuringRedo(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 0xCA881ED))
	mem := vfs.NewCrashableMem()
	db, err := heapkv.Open(crashDir, carryOptions(mem))
	if err != nil {
		t.Fatal(err)
	}
	model := carryWorkload(t, db, rng, 50)
	// The crash must leave recovery a carried value to redo. In 2 to 4
	// runs of 100 every carried value had reached the heap before the
	// crash (some flush in the background; which one was not found):
	// write another tail of carried values then, up to ten times.
	var crashed *vfs.MemFS
	for attempt := 1; ; attempt++ {
		carriedTail(t, db, rng, model)
		crashed = mem.CrashClone(vfs.CrashCloneCfg{})
		if carriedMissing(crashed, model) > 0 {
			break
		}
		if attempt == 10 {
			t.Fatal("ten crashes and every carried value had reached the heap in each: the test exercises nothing")
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Count recovery's write-class operations on a copy.
	probe := crashed.CrashClone(vfs.CrashCloneCfg{})
	counter := testfs.Wrap(probe, func(testfs.Op) {})
	carryVerify(t, counter, model, "first recovery")
	ops := counter.Ops()
	if ops == 0 {
		t.Fatal("recovery wrote nothing")
	}
	heapWrites := 0
	for k := int64(1); k <= ops; k++ {
		base := crashed.CrashClone(vfs.CrashCloneCfg{})
		var nested *vfs.MemFS
		hook := func(op testfs.Op) {
			if op.N == k && nested == nil {
				nested = base.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: int(k*37) % 101, RNG: rng})
				if op.Kind == testfs.WriteAt && op.Path == crashDir+"/heap" {
					heapWrites++
				}
			}
		}
		o := carryOptions(testfs.WrapSerial(base, hook))
		if d, err := heapkv.Open(crashDir, o); err == nil {
			d.Close()
		}
		if nested == nil {
			t.Fatalf("recovery's write %d of %d never happened", k, ops)
		}
		carryVerify(t, nested, model, fmt.Sprintf("crash at recovery's write %d of %d", k, ops))
	}
	if heapWrites == 0 {
		t.Fatal("no crash fell on a heap write of the redo")
	}
}

// TestCarryRedoThenResync: a replica goes stale, durable writes carry
// their values, the machine crashes before the heap is flushed, and
// recovery rewrites the values on the in-sync replica only. Attaching the
// stale replica must then copy every block it missed, recovery's rewrites
// included; a crash in the middle of that resync resumes it.
func TestCarryRedoThenResync(t *testing.T) {
	e := newMirrorEnv(t, 2)
	e.carry = true
	e.resyncSave = 4 * mBS
	db := e.open()
	for i := range 20 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		e.put(db, fmt.Sprintf("k%02d", i%25))
	}
	e.setMem(e.crashClone(vfs.CrashCloneCfg{}))
	db.Close()

	e.rate = 200 * mBS // slow enough to crash in the middle
	db = e.open()      // recovery rewrites the carried values on replica 0
	e.checkModel(db)
	wantState(t, db, 1, heapkv.ReplicaStale)

	// Crash once the resync has saved some progress.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- db.AttachReplica(ctx, 1) }()
	var resyncCrash *vfs.MemFS
	for deadline := time.Now().Add(20 * time.Second); resyncCrash == nil; {
		if st := status(t, db, 1); st.BlocksSynced > 0 && st.State == heapkv.ReplicaResyncing {
			resyncCrash = e.crashClone(vfs.CrashCloneCfg{})
		} else if time.Now().After(deadline) {
			t.Fatalf("the resync saved no progress: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.checkIdentical(db, 0, 1)
	e.checkModel(db)
	mustClose(t, db)

	// From the crash mid-resync: recovery rewrites the carried values again
	// and the resync resumes.
	e.setMem(resyncCrash)
	e.rate = 0
	db = e.open()
	defer mustClose(t, db)
	e.checkModel(db)
	attach(t, db, 1)
	e.checkIdentical(db, 0, 1)
	e.checkModel(db)
}
