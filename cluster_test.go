package heapkv_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// clusterOptions: 128-byte blocks in segments of 256 KiB, so that a test
// heap of a few megabytes spans a dozen segments.
func clusterOptions() *heapkv.Options {
	return &heapkv.Options{
		SegmentSize:        256 << 10,
		CheckpointLogBytes: -1,
		IndexCacheSize:     1 << 20,
		IndexMemTableSize:  1 << 20,
		Cursors:            2,
		Logger:             slog.New(slog.DiscardHandler),
	}
}

// clusterValue is the gen-th value of key i: 300 to 3,300 bytes.
func clusterValue(i, gen int) []byte {
	n := 300 + (i*7919+gen*104729)%3000
	return bytes.Repeat(fmt.Appendf(nil, "<%d#%d>", i, gen), n)[:n]
}

// writeShuffled writes keys 0..n-1 in a random order, then overwrites a
// third of them, and returns the model.
func writeShuffled(t *testing.T, db *heapkv.DB, n int, seed uint64) map[string][]byte {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	model := map[string][]byte{}
	for _, gen := range []int{0, 1} {
		for _, i := range r.Perm(n) {
			if gen == 1 && i%3 != 0 {
				continue
			}
			v := clusterValue(i, gen)
			mustNoErr(t, db.Put(compactKey(i), v))
			model[string(compactKey(i))] = v
		}
	}
	return model
}

// orderOf counts, walking keys lo..hi-1 in order, the heap values whose
// first block follows the previous value's last block (in order), and
// those that start anywhere else (jumps).
func orderOf(t *testing.T, db *heapkv.DB, lo, hi int) (inOrder, jumps int) {
	t.Helper()
	var end uint64
	for i := lo; i < hi; i++ {
		exts, err := heapkv.HeapExtents(db, compactKey(i))
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if len(exts) == 0 {
			continue
		}
		if exts[0][0] == end {
			inOrder++
		} else {
			jumps++
		}
		last := exts[len(exts)-1]
		end = last[0] + last[1]
	}
	return inOrder, jumps
}

// TestCompactClusterInKeyOrder: after Compact with Cluster, values written
// in a random order lie in key order, one right after the other except
// where a segment ends; the contents are unchanged, Check passes, and so
// after a reopen.
func TestCompactClusterInKeyOrder(t *testing.T) {
	// A new index iterator after every batch moved: the walk must resume
	// right after the last key it moved.
	defer heapkv.SetCompactIterBytes(1)()
	dir := filepath.Join(t.TempDir(), "db")
	db := openTestDB(t, dir, clusterOptions())
	const n = 3000
	model := writeShuffled(t, db, n, 1)
	// Reopened, the commit path knows nothing of the keys' last writes:
	// what each move frees is what it read itself (Txn.commitMoves).
	mustClose(t, db)
	db = openTestDB(t, dir, clusterOptions())
	in0, jumps0 := orderOf(t, db, 0, n)
	flushes0, compactions0 := heapkv.IndexCompactions(db)
	res, err := db.Compact(t.Context(), &heapkv.CompactOptions{Cluster: true})
	mustNoErr(t, err)
	in1, jumps1 := orderOf(t, db, 0, n)
	t.Logf("before: %d in order, %d jumps; after: %d, %d; %+v", in0, jumps0, in1, jumps1, res)
	if res.ValuesMoved != n {
		t.Errorf("moved %d values, want all %d", res.ValuesMoved, n)
	}
	// 3,000 values of 1.8 KB on average fill about 21 segments of 256
	// KiB; a jump at each segment's end, nowhere else.
	if jumps1 > 30 || jumps0 < n/2 {
		t.Errorf("jumps between neighbouring keys' values: %d before, %d after clustering", jumps0, jumps1)
	}
	// Every entry was rewritten: the index was flushed and compacted into
	// its last level, so that scans do not step over the entries' old
	// versions (the test's index is small enough that nothing else
	// flushes it).
	levels := heapkv.IndexLevels(db)
	flushes, compactions := heapkv.IndexCompactions(db)
	if slices.ContainsFunc(levels[:6], func(n int64) bool { return n > 0 }) || levels[6] == 0 ||
		flushes == flushes0 || compactions == compactions0 {
		t.Errorf("index after clustering: tables per level %v, %d flushes and %d compactions (before: %d, %d); want all in the last level after a flush and a compaction",
			levels, flushes, compactions, flushes0, compactions0)
	}
	checkContents(t, db, model)
	punched := mustStats(t, db).HeapPunchedSegments
	if punched == 0 {
		t.Errorf("no segment punched after clustering: %+v", res)
	}
	mustClose(t, db)
	db = openTestDB(t, dir, clusterOptions())
	checkContents(t, db, model)
	if in2, jumps2 := orderOf(t, db, 0, n); in2 != in1 || jumps2 != jumps1 {
		t.Errorf("after a reopen: %d in order, %d jumps; want %d, %d", in2, jumps2, in1, jumps1)
	}
	// The punched marks are not in the allocation snapshot: Open finds
	// them again from the file's holes.
	if got := mustStats(t, db).HeapPunchedSegments; got != punched {
		t.Errorf("after a reopen: %d segments counted given back, want %d", got, punched)
	}
}

// TestCompactClusterRange: with cluster bounds, the values of the keys in
// range, and only those, are rewritten in key order; the index is
// compacted over the range; a lower bound not below the upper one (a
// range no key can be in), or bounds without Cluster, are rejected.
func TestCompactClusterRange(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	db := openTestDB(t, dir, clusterOptions())
	const n, lo, hi = 3000, 1000, 2000
	model := writeShuffled(t, db, n, 3)
	before := make([][][2]uint64, n)
	for i := range n {
		exts, err := heapkv.HeapExtents(db, compactKey(i))
		mustNoErr(t, err)
		before[i] = exts
	}
	_, jumps0 := orderOf(t, db, lo, hi)
	flushes0, compactions0 := heapkv.IndexCompactions(db)
	res, err := db.Compact(t.Context(), &heapkv.CompactOptions{
		Cluster: true, ClusterLowerBound: compactKey(lo), ClusterUpperBound: compactKey(hi)})
	mustNoErr(t, err)
	if flushes, compactions := heapkv.IndexCompactions(db); flushes == flushes0 || compactions == compactions0 {
		t.Errorf("index: %d flushes and %d compactions after clustering, %d and %d before; want the range flushed and compacted",
			flushes, compactions, flushes0, compactions0)
	}
	if res.ValuesMoved != hi-lo {
		t.Errorf("moved %d values, want the %d in range", res.ValuesMoved, hi-lo)
	}
	for i := range n {
		exts, err := heapkv.HeapExtents(db, compactKey(i))
		mustNoErr(t, err)
		if moved := !slices.Equal(exts, before[i]); moved != (i >= lo && i < hi) {
			t.Fatalf("key %d: extents %v before, %v after clustering [%d, %d)", i, before[i], exts, lo, hi)
		}
	}
	// 1,000 values of 1.8 KB on average fill about 7 segments of 256 KiB.
	if _, jumps1 := orderOf(t, db, lo, hi); jumps1 > 10 || jumps0 < (hi-lo)/2 {
		t.Errorf("jumps between neighbouring keys' values in range: %d before, %d after clustering", jumps0, jumps1)
	}
	checkContents(t, db, model)

	for _, o := range []heapkv.CompactOptions{
		{ClusterLowerBound: compactKey(lo)},
		{ClusterUpperBound: compactKey(hi)},
		{Cluster: true, ClusterLowerBound: compactKey(hi), ClusterUpperBound: compactKey(lo)},
		{Cluster: true, ClusterLowerBound: compactKey(lo), ClusterUpperBound: compactKey(lo)},
	} {
		if _, err := db.Compact(t.Context(), &o); !errors.Is(err, heapkv.ErrInvalidOptions) {
			t.Errorf("Compact(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
}

// TestCompactClusterWithWriters clusters while writers overwrite and
// delete keys: every write wins over the move, and the database holds
// exactly what the writers wrote last.
func TestCompactClusterWithWriters(t *testing.T) {
	defer heapkv.SetCompactIterBytes(1 << 20)()
	dir := filepath.Join(t.TempDir(), "db")
	db := openTestDB(t, dir, clusterOptions())
	const n = 3000
	model := writeShuffled(t, db, n, 2)
	mustClose(t, db) // as TestCompactClusterInKeyOrder does
	db = openTestDB(t, dir, clusterOptions())
	var mu sync.Mutex
	stop := overwriters(t, db, n, 3, 3, &mu, model, clusterValue, 50*time.Microsecond)
	var moved, conflicts int64
	for range 3 {
		res, err := db.Compact(t.Context(), &heapkv.CompactOptions{Cluster: true})
		if err != nil {
			stop()
			t.Fatal(err)
		}
		moved, conflicts = moved+res.ValuesMoved, conflicts+res.Conflicts
	}
	stop()
	t.Logf("moved %d values, %d conflicts", moved, conflicts)
	if moved < n {
		t.Errorf("moved %d values in three clusterings of %d keys", moved, n)
	}
	checkContents(t, db, model)
}

// TestCompactClusterCrash takes crash clones while Compact clusters (on
// MemFS) and checks that every clone opens with exactly the model.
func TestCompactClusterCrash(t *testing.T) {
	e := newMirrorEnv(t, 2)
	db := e.open()
	r := rand.New(rand.NewPCG(4, 5))
	for _, i := range r.Perm(2000) {
		e.put(db, fmt.Sprintf("k%04d", i))
	}
	mustNoErr(t, db.Sync())
	compactCrashClones(t, e, db, "clustering", &heapkv.CompactOptions{Cluster: true, BytesPerSecond: 512 << 10},
		func(res heapkv.CompactResult) error {
			if res.ValuesMoved == 0 {
				return fmt.Errorf("cluster moved nothing: %+v", res)
			}
			return nil
		})
}
