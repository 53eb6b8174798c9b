package heapkv_test

// Device flushes per synced commit group, counted by a file system that
// sees every Sync and SyncData, not by a timer.

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/internal/testfs"
)

// flushCounter counts the flushes of each kind of file of a database.
type flushCounter struct {
	heap, log, mark, other atomic.Int64
	heapWrites             atomic.Int64 // WriteAt calls on the heap file
}

func (c *flushCounter) hook(op testfs.Op) {
	if op.Kind == testfs.WriteAt && filepath.Base(op.Path) == "heap" {
		c.heapWrites.Add(1)
	}
	if !op.Kind.IsSync() {
		return
	}
	switch name := filepath.Base(op.Path); {
	case name == "heap":
		c.heap.Add(1)
	case name == "SYNCED":
		c.mark.Add(1)
	case strings.HasSuffix(name, ".log"):
		c.log.Add(1)
	default:
		c.other.Add(1)
	}
}

type flushes struct{ heap, log, mark int64 }

func (c *flushCounter) now() flushes {
	return flushes{c.heap.Load(), c.log.Load(), c.mark.Load()}
}

func (f flushes) minus(g flushes) flushes {
	return flushes{f.heap - g.heap, f.log - g.log, f.mark - g.mark}
}

func openCounted(t *testing.T, markDelay time.Duration) (*heapkv.DB, *flushCounter) {
	return openCountedOpts(t, markDelay, &heapkv.Options{})
}

func openCountedOpts(t *testing.T, markDelay time.Duration, o *heapkv.Options) (*heapkv.DB, *flushCounter) {
	t.Helper()
	c := &flushCounter{}
	heapkv.SetFS(o, testfs.Wrap(vfs.Default, c.hook))
	heapkv.SetMarkDelay(o, markDelay)
	return openTestDB(t, t.TempDir(), o), c
}

// TestSyncedGroupFlushes: a synced group whose values are inline or
// carried costs one device flush, of the log; a group with a value above
// CarryLimit, or of values above 8 KiB that together exceed it, costs two,
// the heap's and then the log's.
func TestSyncedGroupFlushes(t *testing.T) {
	db, c := openCounted(t, time.Hour) // no idle mark flush in the way
	put := func(v []byte) flushes {
		t.Helper()
		before := c.now()
		if err := db.Put([]byte("k"), v); err != nil {
			t.Fatal(err)
		}
		return c.now().minus(before)
	}
	put([]byte("first")) // the first group after Open
	// A heap-first group's values that the leader writes start their
	// write-back when written (mirror.Set.StartWriteBack); a carried
	// group's do not, nor a value above CarryLimit, which its writer
	// writes (writeHeapValue).
	starts := func() int64 { return heapkv.HeapWriteBacksStarted(db) }
	for _, tc := range []struct {
		name string
		size int
		want flushes
	}{
		{"inline 100 B", 100, flushes{log: 1}},
		{"carried 4 KiB", 4 << 10, flushes{log: 1}},
		{"carried 4,100 B", 4100, flushes{log: 1}},
		{"carried 64 KiB", heapkv.DefaultCarryLimit, flushes{log: 1}},
		{"heap first 100 KiB", 100 << 10, flushes{heap: 1, log: 1}},
		{"inline after a heap-first value", 100, flushes{log: 1}},
	} {
		s0 := starts()
		if got := put(bytes.Repeat([]byte{byte(tc.size)}, tc.size)); got != tc.want {
			t.Errorf("%s: %+v flushes, want %+v", tc.name, got, tc.want)
		}
		if started := starts() - s0; started != 0 {
			t.Errorf("%s: %d write-backs started by a single Put", tc.name, started)
		}
	}
	// CarryLimit bounds a group's carried bytes, not each value's: two
	// 40 KiB values in one batch (80 KiB) go heap first.
	b := db.NewBatch()
	b.Put([]byte("a"), bytes.Repeat([]byte{1}, 40<<10))
	b.Put([]byte("b"), bytes.Repeat([]byte{2}, 40<<10))
	before, s0 := c.now(), starts()
	if err := db.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := c.now().minus(before), (flushes{heap: 1, log: 1}); got != want {
		t.Errorf("a batch of two 40 KiB values: %+v flushes, want %+v", got, want)
	}
	if starts() == s0 {
		t.Errorf("a batch of two 40 KiB values went heap first without starting its write-back")
	}
	// Small values are carried whatever the group's total: twenty-four
	// 4,100-byte values (96 KiB) cost the log's flush alone, and each reads
	// back.
	b = db.NewBatch()
	small := map[string][]byte{}
	for i := range 24 {
		k, v := fmt.Sprintf("s%02d", i), bytes.Repeat([]byte{byte(i + 1)}, 4100)
		b.Put([]byte(k), v)
		small[k] = v
	}
	before, s0 = c.now(), starts()
	if err := db.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := c.now().minus(before), (flushes{log: 1}); got != want {
		t.Errorf("a batch of twenty-four 4,100-byte values: %+v flushes, want %+v", got, want)
	}
	if starts() != s0 {
		t.Errorf("a carried batch started a write-back")
	}
	for k, v := range small {
		got, err := db.Get([]byte(k))
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Get(%s) after the carried batch: %d bytes, %v", k, len(got), err)
		}
	}

	// Concurrent writers: no heap flush at all, and at most one log flush
	// per commit group (groups share flushes).
	st0, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	before, start := c.now(), time.Now()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 50 {
				if err := db.Put([]byte(fmt.Sprintf("w%d-%d", w, i)), bytes.Repeat([]byte{byte(i)}, 4<<10)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, elapsed := c.now().minus(before), time.Since(start)
	st1, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	groups := st1.CommitGroups - st0.CommitGroups
	// Under load the sync mark is flushed at most every markInterval
	// (10 ms).
	maxMarks := int64(elapsed/(10*time.Millisecond)) + 1
	if got.heap != 0 || got.log == 0 || got.log > groups || got.mark > maxMarks {
		t.Fatalf("800 concurrent synced 4 KiB Puts in %d groups and %v: %+v flushes, want no heap flush, 1 to %d log flushes and at most %d mark flushes",
			groups, elapsed, got, groups, maxMarks)
	}
	t.Logf("800 synced Puts from 16 writers: %d groups, %d log flushes", groups, got.log)
}

// TestIdleSyncMark: once the log is idle, the syncer brings the sync mark
// up to date with one flush of its own, and then leaves it alone.
func TestIdleSyncMark(t *testing.T) {
	db, c := openCounted(t, time.Millisecond)
	if err := db.Put([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.mark.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sync mark was never flushed after the log went idle")
		}
		time.Sleep(time.Millisecond)
	}
	marks := c.mark.Load()
	time.Sleep(50 * time.Millisecond)
	if n := c.mark.Load(); n != marks {
		t.Fatalf("the mark was flushed %d more times with nothing new to mark", n-marks)
	}
}

// TestCarriedValuesOneHeapWrite: the leader allocates the values up to
// CarryLimit from one cursor and writes adjacent ones with one call, so a
// batch of 16 such values (4 KiB and 4,100 B), synced or not, costs one
// heap write. With CarryLimit -1 each writer writes its own values: one
// call per value with blocks smaller than a page (the default); with 4 KiB
// blocks, one call per 4 KiB value and two per 4,100 B value (its whole
// blocks, then the zero-padded tail): 24.
func TestCarriedValuesOneHeapWrite(t *testing.T) {
	for _, tc := range []struct {
		blockSize  int
		carryLimit int
		perBatch   int64 // heap writes for the batch of 16 values
		lone       int64 // heap writes for a lone 4,100-byte value
	}{
		{128, 0, 1, 1},
		{4096, 0, 1, 1},
		{128, -1, 16, 1},
		{4096, -1, 24, 2},
	} {
		t.Run(fmt.Sprintf("block=%d/carry=%d", tc.blockSize, tc.carryLimit), func(t *testing.T) {
			testCarriedValuesOneHeapWrite(t, &heapkv.Options{BlockSize: tc.blockSize, CarryLimit: tc.carryLimit}, tc.perBatch, tc.lone)
		})
	}
}

func testCarriedValuesOneHeapWrite(t *testing.T, o *heapkv.Options, perBatch, lone int64) {
	db, c := openCountedOpts(t, time.Hour, o)
	batch := func(round int) *heapkv.Batch {
		b := db.NewBatch()
		for i := range 16 {
			b.Put([]byte(fmt.Sprintf("r%d-%02d", round, i)), bytes.Repeat([]byte{byte(i + 1)}, 4096+4*(i%2)))
		}
		return b
	}
	for round := range 3 {
		before := c.heapWrites.Load()
		if err := db.Apply(batch(round), &heapkv.WriteOptions{Sync: round < 2}); err != nil {
			t.Fatal(err)
		}
		if got := c.heapWrites.Load() - before; got != perBatch {
			t.Errorf("round %d (sync %v): %d heap writes for 16 values, want %d", round, round < 2, got, perBatch)
		}
	}
	// A lone synced 4,100-byte value (with 4 KiB blocks: two, the second
	// padded).
	before := c.heapWrites.Load()
	if err := db.Put([]byte("odd"), bytes.Repeat([]byte{9}, 4100)); err != nil {
		t.Fatal(err)
	}
	if got := c.heapWrites.Load() - before; got != lone {
		t.Errorf("a synced 4,100-byte value: %d heap writes, want %d", got, lone)
	}
	for round := range 3 {
		for i := range 16 {
			got, err := db.Get([]byte(fmt.Sprintf("r%d-%02d", round, i)))
			if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i + 1)}, 4096+4*(i%2))) {
				t.Fatalf("r%d-%02d: %d bytes, %v", round, i, len(got), err)
			}
		}
	}
}
