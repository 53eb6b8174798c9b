package heapkv

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestBackgroundCheckpointsFollowTheLog: a request for a background
// checkpoint runs one only while the log has grown CheckpointLogBytes
// since the last. Every group applied while a checkpoint runs asks again
// before that checkpoint resets the count; the request it leaves behind,
// which the finished checkpoint answered, used to run a checkpoint of
// almost nothing right after it: twice the commit stalls, log rotations and
// index tables of a steady load.
func TestBackgroundCheckpointsFollowTheLog(t *testing.T) {
	const limit = 256 << 10
	o := &Options{NoSync: true, CheckpointLogBytes: limit}
	SetFS(o, vfs.NewMem())
	db := openTestDB(t, "db", o)
	checkpoints := func() int64 {
		t.Helper()
		st, err := db.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.Checkpoints
	}
	// drain returns once the background loop has handled every request
	// sent before it: the second send waits until the loop has taken the
	// first, which it takes only after handling whatever came before.
	drain := func() {
		db.bg.kick <- struct{}{}
		db.bg.kick <- struct{}{}
	}
	start := checkpoints()
	drain()
	if got := checkpoints() - start; got != 0 {
		t.Fatalf("%d checkpoints for requests with no log written", got)
	}

	// Past the limit: the groups ask, one checkpoint answers, and the
	// requests left over run none.
	v := make([]byte, 200) // inline: the log holds it
	for i := 0; int64(i)*int64(len(v)) < limit; i++ {
		if err := db.Put(fmt.Appendf(nil, "k%06d", i), v); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); checkpoints()-start < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no background checkpoint 10s after the log passed CheckpointLogBytes")
		}
	}
	drain()
	drain()
	if got := checkpoints() - start; got != 1 {
		t.Fatalf("%d background checkpoints after one CheckpointLogBytes of log and requests left over, want 1", got)
	}
}

// TestCheckpointIntervalStretchesForCarriedValues: the log may hold a
// sixteenth of the heap (up to maxCarriedIntervals x CheckpointLogBytes)
// before a checkpoint is due, but only in values its records carry; other
// record bytes still ask for one every CheckpointLogBytes.
func TestCheckpointIntervalStretchesForCarriedValues(t *testing.T) {
	const limit = 256 << 10
	o := &Options{CheckpointLogBytes: limit, SegmentSize: 64 << 10}
	SetFS(o, vfs.NewMem())
	db := openTestDB(t, "db", o)
	due := func(total, carried int64) bool {
		db.applier.mu.Lock()
		defer db.applier.mu.Unlock()
		saved, savedCarried := db.applier.sinceCkpt, db.applier.sinceCkptCarried
		db.applier.sinceCkpt, db.applier.sinceCkptCarried = total, carried
		defer func() { db.applier.sinceCkpt, db.applier.sinceCkptCarried = saved, savedCarried }()
		return db.checkpointDueLocked()
	}
	// growHeap writes heap values without syncing (their records carry
	// nothing) until the heap file is at least n bytes.
	growHeap := func(n int64) {
		t.Helper()
		v := make([]byte, 16<<10)
		for i := 0; int64(db.alloc.Segments())*db.geom.SegmentBytes() < n; i++ {
			b := db.NewBatch()
			b.Put(fmt.Appendf(nil, "grow%06d", i), v)
			if err := db.Apply(b, &WriteOptions{Sync: false}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A small heap: the interval is CheckpointLogBytes, carried or not.
	if !due(limit, limit-1) || due(limit-1, limit-1) {
		t.Fatalf("small heap: want a checkpoint due at CheckpointLogBytes of log (%d) and not before", limit)
	}

	// 8 MiB of heap: carried values may take the log to 512 KiB.
	growHeap(8 << 20)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	stretched := int64(db.alloc.Segments()) * db.geom.SegmentBytes() / 16
	if stretched <= limit || stretched >= maxCarriedIntervals*limit {
		t.Fatalf("heap of %d bytes: a sixteenth (%d) should lie between the limits", db.alloc.Segments()*int(db.geom.SegmentBytes()), stretched)
	}
	if db.carriedLogLimit() != stretched {
		t.Fatalf("carriedLogLimit %d, want %d", db.carriedLogLimit(), stretched)
	}
	if due(stretched-1, stretched-limit) {
		t.Fatal("a checkpoint due before the stretched limit, with less than CheckpointLogBytes not carried")
	}
	if !due(stretched, stretched-limit) {
		t.Fatal("no checkpoint due at the stretched limit")
	}
	if !due(limit, 0) {
		t.Fatal("no checkpoint due at CheckpointLogBytes of records that carry nothing")
	}

	// Synced 4 KiB values are carried: from here on a checkpoint per
	// stretched interval of log, not one per CheckpointLogBytes. After
	// each Put the background loop is let through whatever the Put asked
	// (as in TestBackgroundCheckpointsFollowTheLog), so that checkpoints
	// come when due and not some groups later.
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	start := st.Checkpoints
	v := make([]byte, 4<<10)
	n := 4 * int(stretched) / len(v)
	for i := range n {
		if err := db.Put(fmt.Appendf(nil, "carried%06d", i%64), v); err != nil {
			t.Fatal(err)
		}
		db.bg.kick <- struct{}{}
		db.bg.kick <- struct{}{}
	}
	if st, err = db.Stats(); err != nil {
		t.Fatal(err)
	}
	logged := int64(n * len(v)) // the carried values; the records are a little longer
	got := st.Checkpoints - start
	if want := logged / stretched; got < want-1 || got > want+1 {
		t.Fatalf("%d checkpoints for %d bytes of log of carried values, want %d±1 (one a %d bytes; %d at CheckpointLogBytes)",
			got, logged, want, stretched, logged/limit)
	}

	// Stats shows the count and the limit: after a checkpoint, one synced
	// 4 KiB Put is 4 KiB of carried value in a slightly longer record.
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("one more"), v); err != nil {
		t.Fatal(err)
	}
	if st, err = db.Stats(); err != nil {
		t.Fatal(err)
	}
	limitNow := db.carriedLogLimit() // the heap has grown a little since
	if st.LogSinceCheckpointCarried != int64(len(v)) || st.LogSinceCheckpoint <= int64(len(v)) || st.CheckpointCarriedLimit != limitNow || limitNow < stretched {
		t.Fatalf("Stats after a checkpoint and one synced 4 KiB Put: %d bytes of log since, %d carried, due at %d; want more than %d, %d, %d (at least %d)",
			st.LogSinceCheckpoint, st.LogSinceCheckpointCarried, st.CheckpointCarriedLimit, len(v), len(v), limitNow, stretched)
	}
	if line := fmt.Sprintf("log since checkpoint %d bytes (%d of carried values; due at %d in all)", st.LogSinceCheckpoint, len(v), limitNow); !strings.Contains(st.String(), line) {
		t.Fatalf("Stats.String lacks %q:\n%s", line, st.String())
	}

	// And the limit stops at maxCarriedIntervals x CheckpointLogBytes.
	growHeap(int64(maxCarriedIntervals*16+16) * limit)
	if got, want := db.carriedLogLimit(), int64(maxCarriedIntervals*limit); got != want {
		t.Fatalf("carriedLogLimit %d on a heap of %d segments, want %d", got, db.alloc.Segments(), want)
	}
}

// With automatic checkpoints off, Stats counts the log since the last
// checkpoint and names no limit.
func TestStatsLogSinceCheckpointWithoutAutomaticCheckpoints(t *testing.T) {
	o := &Options{CheckpointLogBytes: -1}
	SetFS(o, vfs.NewMem())
	db := openTestDB(t, "db", o)
	v := make([]byte, 4<<10)
	if err := db.Put([]byte("k"), v); err != nil {
		t.Fatal(err)
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.CheckpointCarriedLimit != 0 || st.LogSinceCheckpointCarried != int64(len(v)) || st.LogSinceCheckpoint <= int64(len(v)) {
		t.Fatalf("Stats: %d bytes of log since the checkpoint, %d carried, limit %d; want more than %d, %d, 0",
			st.LogSinceCheckpoint, st.LogSinceCheckpointCarried, st.CheckpointCarriedLimit, len(v), len(v))
	}
	if !strings.Contains(st.String(), "no automatic checkpoints") {
		t.Fatalf("Stats.String does not say that no checkpoint is automatic:\n%s", st.String())
	}
}
