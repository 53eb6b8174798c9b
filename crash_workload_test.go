package heapkv_test

// The crash enumeration's workloads: how a seeded plan of writes is made
// and run against a file system that records every operation.

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

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
	o := heapkv.Options{
		BlockSize:          128,
		SegmentSize:        256 * 128,
		IndexMemTableSize:  1 << 20,
		LogSegmentSize:     64 << 10,
		InlineThreshold:    64,
		CheckpointLogBytes: -1,
		ValueCacheSize:     -1, // a 64 MiB ristretto cache costs more to make and clear than a small reopen
		Logger:             crashLogger,
	}
	heapkv.CrossCheckKeyFilter(&o)
	heapkv.CrossCheckEntryCache(&o)
	return o
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
