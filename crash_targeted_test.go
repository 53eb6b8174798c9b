package heapkv_test

// Crash tests aimed at one window each, and the file helpers they share
// with the enumeration.

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/internal/testfs"
)

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
	db := openTestDB(t, crashDir, &opts)
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
	fs := testfs.WrapSerial(mem, func(op testfs.Op) {
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
	db := openTestDB(t, crashDir, &opts)
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
