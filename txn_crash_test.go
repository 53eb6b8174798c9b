package heapkv_test

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/internal/testfs"
)

// Crash enumeration over batches and transactions: every multi-key write
// is all or nothing after a crash at any file system operation.
//
// A planned workload of batches and transactions (read-write with reads
// and read-your-writes, serializable, conflicting pairs of which the second
// must fail and leave no trace, reads through iterators), with syncs and
// checkpoints, runs on a vfs.CrashableMem seen through internal/testfs,
// whose hook runs before every write-class operation, where the test takes
// a CrashClone (keeping a random share of
// unsynced data; and one keeping none). Each clone is reopened and must
// hold exactly the model state after some prefix of the committed writes
// that includes every write acknowledged as durable; Check must pass.

var txnCrashStates = flag.Int("heapkv.txncrashstates", 0,
	"minimum number of crash states TestTxnCrashEnumeration verifies (0: 300, or 40 with -short or -race)")

// txnCrashStep is one planned call.
type txnCrashStep struct {
	kind   string // "batch", "txn", "conflict", "sync", "checkpoint"
	ops    []tcOp // the writes (a conflict's winner; the loser writes ops2)
	ops2   []tcOp
	sync   bool
	reads  []string // keys a txn reads first (and checks against the model)
	serial bool
	iter   bool // a txn also walks its view with an iterator
}

type txnCrashPlan struct {
	steps  []txnCrashStep
	states []map[string][]byte // states[i]: after the first i committed writes
	keys   []string
}

func planTxnCrash(seed uint64, n int) *txnCrashPlan {
	rng := rand.New(rand.NewPCG(seed, 0x7478))
	p := &txnCrashPlan{}
	for i := range 10 {
		p.keys = append(p.keys, fmt.Sprintf("key-%02d", i))
	}
	cur := map[string][]byte{}
	p.states = append(p.states, maps.Clone(cur))
	randOps := func(n int) []tcOp {
		var ops []tcOp
		for range n {
			op := tcOp{key: p.keys[rng.IntN(len(p.keys))]}
			if rng.IntN(5) == 0 {
				op.del = true
			} else {
				size := rng.IntN(60)
				if rng.IntN(2) == 0 {
					size = 65 + rng.IntN(4000)
				}
				op.val = crashBytes(rng, size)
			}
			ops = append(ops, op)
		}
		return ops
	}
	apply := func(ops []tcOp) {
		for _, op := range ops {
			if op.del {
				delete(cur, op.key)
			} else {
				cur[op.key] = op.val
			}
		}
		p.states = append(p.states, maps.Clone(cur))
	}
	for i := range n {
		if i == n/3 || i == 2*n/3 {
			p.steps = append(p.steps, txnCrashStep{kind: "checkpoint"})
		}
		if rng.IntN(12) == 0 {
			p.steps = append(p.steps, txnCrashStep{kind: "sync"})
		}
		s := txnCrashStep{sync: rng.IntN(3) == 0, ops: randOps(2 + rng.IntN(5))}
		switch r := rng.IntN(6); {
		case r < 2:
			s.kind = "batch"
		case r < 5:
			s.kind = "txn"
			s.serial = rng.IntN(2) == 0
			s.iter = rng.IntN(2) == 0
			for range rng.IntN(3) {
				s.reads = append(s.reads, p.keys[rng.IntN(len(p.keys))])
			}
		default:
			s.kind = "conflict"
			s.ops2 = randOps(2)
			s.ops2[0].key = s.ops[0].key // both write this key: the second fails
		}
		apply(s.ops)
		p.steps = append(p.steps, s)
	}
	return p
}

// txnCrashProgress is read by the crash hook.
type txnCrashProgress struct {
	started atomic.Int64
	durable atomic.Int64
}

func (p *txnCrashPlan) run(t *testing.T, fs vfs.FS, pr *txnCrashProgress) {
	opts := txnCrashOptions()
	heapkv.SetFS(&opts, fs)
	db := openTestDB(t, "db", &opts)
	writes := 0
	for _, s := range p.steps {
		var wo *heapkv.WriteOptions
		if s.sync {
			wo = &heapkv.WriteOptions{Sync: true}
		}
		switch s.kind {
		case "sync":
			if err := db.Sync(); err != nil {
				t.Fatal(err)
			}
			pr.durable.Store(pr.started.Load())
			continue
		case "checkpoint":
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			pr.durable.Store(pr.started.Load())
			continue
		case "batch":
			b := db.NewBatch()
			for _, op := range s.ops {
				if op.del {
					b.Delete([]byte(op.key))
				} else {
					b.Put([]byte(op.key), op.val)
				}
			}
			pr.started.Add(1)
			if err := db.Apply(b, wo); err != nil {
				t.Fatal(err)
			}
		case "txn":
			before := p.states[writes]
			pr.started.Add(1)
			if err := db.UpdateTxn(&heapkv.TxnOptions{Serializable: s.serial, WriteOptions: wo}, func(txn *heapkv.Txn) error {
				for _, k := range s.reads {
					v, err := txn.Get([]byte(k))
					if want, ok := before[k]; ok != (err == nil) || ok && string(v) != string(want) {
						return fmt.Errorf("txn read %s: %d bytes, %v; model has %v", k, len(v), err, ok)
					}
				}
				if err := txnWrite(txn, s.ops); err != nil {
					return err
				}
				if s.iter {
					it, err := txn.NewIter(nil)
					if err != nil {
						return err
					}
					n := 0
					for ok := it.First(); ok; ok = it.Next() {
						n++
					}
					if n != len(p.states[writes+1]) {
						return fmt.Errorf("txn iterator saw %d keys, want %d", n, len(p.states[writes+1]))
					}
					if err := it.Close(); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		case "conflict":
			t1, err := db.BeginTxn(&heapkv.TxnOptions{WriteOptions: wo})
			if err != nil {
				t.Fatal(err)
			}
			t2, err := db.BeginTxn(&heapkv.TxnOptions{WriteOptions: wo})
			if err != nil {
				t.Fatal(err)
			}
			if err := txnWrite(t2, s.ops2); err != nil {
				t.Fatal(err)
			}
			if err := txnWrite(t1, s.ops); err != nil {
				t.Fatal(err)
			}
			pr.started.Add(1)
			if err := t1.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := t2.Commit(); !errors.Is(err, heapkv.ErrConflict) {
				t.Fatalf("t2.Commit() = %v, want %v", err, heapkv.ErrConflict)
			}
		}
		writes++
		if s.sync {
			pr.durable.Store(int64(writes))
		}
	}
	got, err := crashReadAll(db, p.keys)
	if err != nil {
		t.Fatal(err)
	}
	if !crashSameState(got, p.states[writes]) {
		t.Fatal(crashStateDiff(got, p.states[writes]))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	pr.durable.Store(pr.started.Load())
}

func txnWrite(txn *heapkv.Txn, ops []tcOp) error {
	for _, op := range ops {
		var err error
		if op.del {
			err = txn.Delete([]byte(op.key))
		} else {
			err = txn.Put([]byte(op.key), op.val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// txnCrashOptions is crashOptions with NoSync by default (transactions
// choose per commit), the default value cache, and a quiet logger.
func txnCrashOptions() heapkv.Options {
	o := crashOptions()
	o.NoSync = true
	o.ValueCacheSize = 0
	o.Logger = txnLogger
	return o
}

// crashFS wraps mem so that hook runs before each write-class operation
// (the lock file's creation and opens for writing left out).
func crashFS(mem *vfs.MemFS, hook func(testfs.Op)) vfs.FS {
	return testfs.WrapSerial(mem, func(op testfs.Op) {
		if op.Kind != testfs.Lock && op.Kind != testfs.OpenReadWrite {
			hook(op)
		}
	})
}

// verify reopens a crash clone and checks it holds a state in [lo, hi];
// it returns which.
func (p *txnCrashPlan) verify(fs vfs.FS, lo, hi int) (int, error) {
	opts := txnCrashOptions()
	heapkv.SetFS(&opts, fs)
	db, err := heapkv.Open("db", &opts)
	if err != nil {
		return 0, fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	got, err := crashReadAll(db, p.keys)
	if err != nil {
		return 0, err
	}
	for i := hi; i >= lo; i-- {
		if crashSameState(got, p.states[i]) {
			return i, crashCheckDB(db, len(got))
		}
	}
	return 0, fmt.Errorf("state is no prefix of the commits in [%d, %d]: nearest diff to %d: %s", lo, hi, lo, crashStateDiff(got, p.states[lo]))
}

func TestTxnCrashEnumeration(t *testing.T) {
	target, steps := 300, 30
	if testing.Short() || heapkv.RaceEnabled {
		target = 40 // reopening is slow under the race detector
	}
	if *txnCrashStates > 0 {
		target = *txnCrashStates
	}
	var (
		states, failures atomic.Int64
		beyond, lost     atomic.Int64 // recovered an undurable write; lost a started one
		errsMu           sync.Mutex
		errs             []string
	)
	for seed := uint64(0); states.Load() < int64(target) && failures.Load() == 0; seed++ {
		p := planTxnCrash(seed, steps)
		// A dry run counts the operations, to spread the clones over them.
		var dry atomic.Int64
		p.run(t, crashFS(vfs.NewCrashableMem(), func(testfs.Op) { dry.Add(1) }), &txnCrashProgress{})
		every := max(1, dry.Load()/int64(target/2))

		mem := vfs.NewCrashableMem()
		var pr txnCrashProgress
		type state struct {
			name   string
			fs     *vfs.MemFS
			lo, hi int
		}
		ch := make(chan state, 2)
		var wg sync.WaitGroup
		for range runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for s := range ch {
					got, err := p.verify(s.fs, s.lo, s.hi)
					if got > s.lo {
						beyond.Add(1)
					}
					if got < s.hi {
						lost.Add(1)
					}
					if err != nil {
						failures.Add(1)
						errsMu.Lock()
						errs = append(errs, fmt.Sprintf("seed %d: %s: %v", seed, s.name, err))
						errsMu.Unlock()
					}
					states.Add(1)
				}
			}()
		}
		var n atomic.Int64
		hook := func(op testfs.Op) {
			k := n.Add(1)
			if k%every != 0 {
				return
			}
			lo, hi := int(pr.durable.Load()), int(pr.started.Load())
			rng := rand.New(rand.NewPCG(seed, uint64(k)))
			pct := rng.IntN(100)
			name := fmt.Sprintf("crash before op %d (%v %s)", k, op.Kind, op.Path)
			ch <- state{name + " keeping no unsynced data", mem.CrashClone(vfs.CrashCloneCfg{}), lo, hi}
			ch <- state{fmt.Sprintf("%s keeping %d%% of unsynced data", name, pct),
				mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng}), lo, hi}
		}
		p.run(t, crashFS(mem, hook), &pr)
		close(ch)
		wg.Wait()
		t.Logf("seed %d: %d steps, %d file system write ops, %d crash states so far", seed, len(p.steps), n.Load(), states.Load())
	}
	slices.Sort(errs)
	for _, e := range errs[:min(len(errs), 5)] {
		t.Error(e)
	}
	if len(errs) > 0 {
		t.Fatal(errors.New("crash states failed"))
	}
	t.Logf("%d crash states: %d recovered a write not known durable, %d lost a write not yet durable", states.Load(), beyond.Load(), lost.Load())
	if beyond.Load() == 0 || lost.Load() == 0 {
		t.Error("the enumeration never recovered an undurable write or never lost one: it proves little")
	}
}

// tcOp is one write of a planned batch or transaction.
type tcOp struct {
	del bool
	key string
	val []byte
}
