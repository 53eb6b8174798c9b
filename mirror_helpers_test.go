package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/mirror"
)

// Helpers of the mirror tests: a database with mirrors on a crashable
// MemFS behind an errorfs that can fail one replica's I/O, a model of what
// it holds, and direct access to the replica files.

const (
	mdbDir = "db"
	mBS    = 128 // block size of the mirror tests (the default)
)

// mirrorEnv is a database directory with n-1 mirrors (replica i > 0 lives
// in db/m<i>).
type mirrorEnv struct {
	t       *testing.T
	mem     *vfs.MemFS
	inj     *injector // armed; failPath and heal set what fails
	fs      vfs.FS
	mirrors []string
	rate    int64 // Options.ResyncRate
	srate   int64 // Options.ScrubRate
	auto    bool  // let Open attach stale replicas
	// resyncSave is the copy in bytes between saves of resync progress
	// (0: the default).
	resyncSave int64
	carry      bool // durable writes carry their values (Options.CarryLimit default)

	model map[string][]byte // what the database must hold
	gen   int

	// cloneMu orders crashClone against Links (linkGuardFS).
	cloneMu sync.RWMutex
}

func newMirrorEnv(t *testing.T, replicas int) *mirrorEnv {
	e := &mirrorEnv{t: t, inj: newInjector(), model: map[string][]byte{}}
	e.inj.armed.Store(true)
	e.setMem(vfs.NewCrashableMem())
	for i := 1; i < replicas; i++ {
		e.mirrors = append(e.mirrors, fmt.Sprintf("m%d", i))
	}
	return e
}

func (e *mirrorEnv) setMem(m *vfs.MemFS) {
	e.mem = m
	e.fs = errorfs.Wrap(linkGuardFS{FS: m, mu: &e.cloneMu}, e.inj)
}

// crashClone is e.mem.CrashClone, for a database that may be running.
// Pebble v2.1.7's MemFS.Link takes its clone lock (a sync.RWMutex) for
// reading twice, the second time inside its tree walk; a CrashClone that
// asks for the lock between the two waits for the first, and the second
// waits for the CrashClone: a deadlock (seen once in CI, in
// TestCarryRedoThenResync, with a checkpoint's index marker being ingested
// while the test cloned the file system). Here Links and clones exclude
// each other first.
func (e *mirrorEnv) crashClone(cfg vfs.CrashCloneCfg) *vfs.MemFS {
	e.cloneMu.Lock()
	defer e.cloneMu.Unlock()
	return e.mem.CrashClone(cfg)
}

// clonesDuring runs run in a goroutine and takes crash clones of the file
// system (unsynced data kept at random, seeded by seed) every gap while
// it runs, at most max of them, then one clean clone after it; it fails
// the test if run fails.
func (e *mirrorEnv) clonesDuring(max int, gap time.Duration, seed uint64, run func() error) []*vfs.MemFS {
	e.t.Helper()
	var clones []*vfs.MemFS
	done := make(chan error, 1)
	go func() { done <- run() }()
	for {
		select {
		case err := <-done:
			if err != nil {
				e.t.Fatal(err)
			}
			return append(clones, e.crashClone(vfs.CrashCloneCfg{}))
		default:
			if len(clones) < max {
				rng := rand.New(rand.NewPCG(uint64(len(clones)), seed))
				clones = append(clones, e.crashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng}))
			}
			time.Sleep(gap)
		}
	}
}

// linkGuardFS runs every Link under mu held for reading (crashClone).
type linkGuardFS struct {
	vfs.FS
	mu *sync.RWMutex
}

func (fs linkGuardFS) Link(oldname, newname string) error {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	return fs.FS.Link(oldname, newname)
}

func (e *mirrorEnv) options() *heapkv.Options {
	o := &heapkv.Options{
		BlockSize:          mBS,
		SegmentSize:        256 * mBS,
		InlineThreshold:    64,
		LogSegmentSize:     64 << 10,
		CheckpointLogBytes: -1,
		IndexCacheSize:     1 << 20,
		IndexMemTableSize:  1 << 20,
		ValueCacheSize:     -1, // every Get reads the heap
		Cursors:            2,
		Logger:             slog.New(slog.DiscardHandler),
		Mirrors:            e.mirrors,
		ResyncRate:         e.rate,
		ScrubRate:          e.srate,
		// Values go heap first, each group flushing the heap, so that a
		// replica's stale LSN (its last heap flush) is per write and the
		// blocks it missed are exactly those the tests count. With carried
		// values (e.carry) the heap is flushed at checkpoints only.
		CarryLimit: -1,
	}
	if e.carry {
		o.CarryLimit = 0
	}
	heapkv.SetFS(o, e.fs)
	if !e.auto {
		heapkv.SetNoAutoAttach(o)
	}
	if e.resyncSave > 0 {
		heapkv.SetResyncSaveBytes(o, e.resyncSave)
	}
	return o
}

func (e *mirrorEnv) open() *heapkv.DB {
	e.t.Helper()
	db := openTestDB(e.t, mdbDir, e.options())
	return db
}

// replicaFile is the heap file of replica id.
func replicaFile(id int) string {
	if id == 0 {
		return mdbDir + "/heap"
	}
	return fmt.Sprintf("%s/m%d/heap", mdbDir, id)
}

// value returns the gen-th value of key: 2 to 6 blocks of recognisable
// bytes.
func value(key string, gen int) []byte {
	n := 600 + (gen*977+len(key)*131)%2400
	unit := []byte(fmt.Sprintf("<%s#%d>", key, gen))
	return bytes.Repeat(unit, n/len(unit)+1)[:n]
}

// put writes key with a new value and records it in the model.
func (e *mirrorEnv) put(db *heapkv.DB, key string) {
	e.t.Helper()
	e.gen++
	v := value(key, e.gen)
	if err := db.Put([]byte(key), v); err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
	e.model[key] = v
}

func (e *mirrorEnv) del(db *heapkv.DB, key string) {
	e.t.Helper()
	if err := db.Delete([]byte(key)); err != nil {
		e.t.Fatalf("delete %s: %v", key, err)
	}
	delete(e.model, key)
}

// checkModel reads every key back.
func (e *mirrorEnv) checkModel(db *heapkv.DB) {
	e.t.Helper()
	for _, k := range slices.Sorted(maps.Keys(e.model)) {
		got, err := db.Get([]byte(k))
		if err != nil || !bytes.Equal(got, e.model[k]) {
			e.t.Fatalf("get %s: %v (%d bytes, want %d)", k, err, len(got), len(e.model[k]))
		}
	}
}

// liveBlocks returns the heap blocks of the given keys' live values.
func (e *mirrorEnv) liveBlocks(db *heapkv.DB, keys map[string]bool) map[uint64]bool {
	e.t.Helper()
	out := map[uint64]bool{}
	for k := range keys {
		if _, ok := e.model[k]; !ok {
			continue
		}
		bl, err := heapkv.ValueBlocks(db, []byte(k))
		if err != nil {
			e.t.Fatal(err)
		}
		for _, b := range bl {
			out[b] = true
		}
	}
	return out
}

// mOff returns the offset of block b in a replica file of the mirror
// tests: after the header area (4 KiB for 128-byte blocks).
func mOff(b uint64) int64 { return mirror.HeaderArea(mBS) + int64(b)*mBS }

// readBlocks reads blocks straight from replica id's file.
func (e *mirrorEnv) readBlocks(id int, blocks []uint64) []byte {
	e.t.Helper()
	f, err := e.mem.Open(replicaFile(id))
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var out []byte
	for _, b := range blocks {
		p := make([]byte, mBS)
		n, _ := f.ReadAt(p, mOff(b))
		clear(p[n:])
		out = append(out, p...)
	}
	return out
}

// writeBlock overwrites part of a block straight in replica id's file.
func (e *mirrorEnv) writeBlock(id int, b uint64, off int, p []byte) {
	e.t.Helper()
	f, err := e.mem.OpenReadWrite(replicaFile(id), vfs.WriteCategoryUnspecified)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, mOff(b)+int64(off)); err != nil {
		e.t.Fatal(err)
	}
}

// checkIdentical proves that every replica in ids holds every live value's
// bytes, read straight from its file.
func (e *mirrorEnv) checkIdentical(db *heapkv.DB, ids ...int) {
	e.t.Helper()
	for k, v := range e.model {
		bl, err := heapkv.ValueBlocks(db, []byte(k))
		if err != nil {
			e.t.Fatal(err)
		}
		for _, id := range ids {
			if got := e.readBlocks(id, bl); !bytes.Equal(got[:len(v)], v) {
				e.t.Fatalf("replica %d does not hold the value of %s (blocks %v)", id, k, bl)
			}
		}
	}
}

func status(t *testing.T, db *heapkv.DB, id int) heapkv.ReplicaStatus {
	t.Helper()
	sts := db.Replicas()
	if id >= len(sts) {
		t.Fatalf("replica %d of %d", id, len(sts))
	}
	return sts[id]
}

func wantState(t *testing.T, db *heapkv.DB, id int, want heapkv.ReplicaState) heapkv.ReplicaStatus {
	t.Helper()
	st := status(t, db, id)
	if st.State != want {
		t.Fatalf("replica %d is %v (cause %q), want %v", id, st.State, st.Cause, want)
	}
	return st
}

func attach(t *testing.T, db *heapkv.DB, id int) heapkv.ReplicaStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := db.AttachReplica(ctx, id); err != nil {
		t.Fatalf("attach %d: %v", id, err)
	}
	return wantState(t, db, id, heapkv.ReplicaInSync)
}

// waitInSync waits, without asking for an attach, until replica id is in
// sync (Open's automatic attach brings it there), and returns its status.
func waitInSync(t *testing.T, db *heapkv.DB, id int) heapkv.ReplicaStatus {
	t.Helper()
	return waitReplica(t, db, id, "in sync", func(st heapkv.ReplicaStatus) bool {
		return st.State == heapkv.ReplicaInSync
	})
}

// waitReplica polls replica id's status until done accepts it, and fails
// the test (saying it waited for what) if that takes more than a minute.
func waitReplica(t *testing.T, db *heapkv.DB, id int, what string, done func(heapkv.ReplicaStatus) bool) heapkv.ReplicaStatus {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st := status(t, db, id)
		if done(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %d: not %s after a minute: %+v", id, what, st)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustClose(t *testing.T, db *heapkv.DB) {
	t.Helper()
	if err := db.Close(); err != nil && !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("close: %v", err)
	}
}
