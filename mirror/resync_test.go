package mirror

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// Must show 5 (device level): a resync interrupted by cancellation, by a
// source that cannot be read and by the target failing resumes where it
// stopped, never copies a block twice, and ends identical.
func TestResyncInterrupted(t *testing.T) {
	f := newFixture(t, 2)
	f.mustWrite(0, 10, 1)
	if err := f.set.Detach(1, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for b := uint64(0); b < n; b += 4 {
		f.mustWrite(b, 4, 2)
	}
	if _, err := f.set.Reopen(1); err != nil {
		t.Fatal(err)
	}
	// waitCopied blocks until the running resync has copied n blocks.
	waitCopied := func(n int64) {
		for f.status(1).Copied < n && f.status(1).State == Resyncing {
			time.Sleep(100 * time.Microsecond)
		}
	}
	total, lost := int64(0), int64(0)
	for round := 0; ; round++ {
		before := f.status(1).Synced
		var res ResyncResult
		var err error
		switch round % 3 {
		case 0: // cancelled
			ctx, cancel := context.WithCancel(t.Context())
			go func() { waitCopied(100); cancel() }()
			res, err = f.set.Resync(ctx, 1, ResyncOptions{Allocated: f.allocated, Rate: 2 << 20})
			cancel()
		case 1: // the only source cannot be read any more
			go func() { waitCopied(50); f.inj.fail(f.paths[0], errorfs.OpFileReadAt) }()
			res, err = f.resync(1, 1<<20)
			f.inj.heal()
		case 2: // the target fails a write: what it got since the last
			// Sync may be lost, and is copied again
			go func() { waitCopied(50); f.inj.fail(f.paths[1], errorfs.OpFileWriteAt) }()
			res, err = f.resync(1, 1<<20)
			f.inj.heal()
			if err != nil {
				lost += res.Copied
			}
			if _, rerr := f.set.Reopen(1); rerr != nil {
				t.Fatal(rerr)
			}
		}
		total += res.Copied
		st := f.status(1)
		if err == nil {
			mustState(t, st, InSync)
			t.Logf("round %d finished: %d copied", round, res.Copied)
			break
		}
		mustState(t, st, Stale)
		t.Logf("round %d stopped after %d blocks (synced %d -> %d): %v", round, res.Copied, before, st.Synced, err)
		if round > 50 {
			t.Fatal("resync never finishes")
		}
		if err := f.set.Sync(); err != nil { // the database syncs about once a second
			t.Fatal(err)
		}
	}
	if total != n+lost {
		t.Fatalf("copied %d blocks over all rounds, want %d + %d lost to target failures (no block twice otherwise)", total, n, lost)
	}
	f.checkReplicas(0, 1)
}

// With several in-sync replicas a source read error falls back to another.
func TestResyncSourceFallback(t *testing.T) {
	f := newFixture(t, 3)
	if err := f.set.Detach(2, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	f.mustWrite(0, 300, 1)
	if _, err := f.set.Reopen(2); err != nil {
		t.Fatal(err)
	}
	f.inj.fail(f.paths[0], errorfs.OpFileReadAt)
	res, err := f.resync(2, 0)
	f.inj.heal()
	if err != nil || res.Copied != 300 {
		t.Fatalf("resync with a failing source: %+v, %v", res, err)
	}
	f.checkReplicas(0, 1, 2)
}

// Must show 6 (device level): writers hammer the device while a resync
// runs; the copier never puts older bytes over newer ones.
func TestResyncConcurrentWrites(t *testing.T) {
	f := newFixture(t, 2)
	const span = 4096
	for b := uint64(0); b < span; b += 64 {
		f.mustWrite(b, 64, 0)
	}
	if err := f.set.Detach(1, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	var tag atomic.Uint64
	write := func(rng *rand.Rand) {
		b := rng.Uint64N(span - 8)
		n := 1 + rng.IntN(8)
		// Writers own disjoint stripes of tags, so the model stays exact
		// per block even with concurrent writers (last writer wins in the
		// model and on disk alike because writes of a block are
		// serialised by blockLocks).
		lockBlocks(b, n)
		defer unlockBlocks(b, n)
		if rng.IntN(5) == 0 {
			f.free(b, n)
			return
		}
		f.mustWrite(b, n, tag.Add(1))
	}
	for i := 0; i < 2000; i++ {
		write(rand.New(rand.NewPCG(uint64(i), 1)))
	}
	if _, err := f.set.Reopen(1); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for ctx.Err() == nil {
				write(rng)
			}
		})
	}
	res, err := f.resync(1, 0)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("copied %d blocks while %d writes ran", res.Copied, tag.Load())
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	f.checkReplicas(0, 1)
}

// blockLocks serialise test writers per block, so the model's last writer
// is the device's last writer.
var blockLocks [64]sync.Mutex

func lockBlocks(b uint64, n int) {
	var m uint64
	for i := range n {
		m |= 1 << ((b + uint64(i)) % 64)
	}
	for i := range 64 {
		if m&(1<<i) != 0 {
			blockLocks[i].Lock()
		}
	}
}

func unlockBlocks(b uint64, n int) {
	var m uint64
	for i := range n {
		m |= 1 << ((b + uint64(i)) % 64)
	}
	for i := range 64 {
		if m&(1<<i) != 0 {
			blockLocks[i].Unlock()
		}
	}
}

// Capture and Open carry tracking and sync bitmaps across a crash; a stale
// LSN that no tracking bitmap covers means a full copy.
func TestCaptureOpen(t *testing.T) {
	f := newFixture(t, 3)
	f.mustWrite(0, 100, 1)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.set.Detach(1, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	stale1 := f.curLSN()
	f.mustWrite(5, 10, 2)
	f.mustWrite(500, 3, 2)
	if err := f.set.Detach(2, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	stale2 := f.curLSN()
	f.mustWrite(40, 2, 3)
	// Part of replica 1's resync, then a checkpoint.
	if _, err := f.set.Reopen(1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f.set.Resync(ctx, 1, ResyncOptions{Allocated: f.allocated})
	trk, err := f.set.Capture()
	if err != nil || trk == nil {
		t.Fatalf("capture: %v", err)
	}
	ckpt := f.curLSN()
	f.mustWrite(60, 1, 4) // after the checkpoint: replay must re-mark it
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	f.set.Close()

	open := func(tracking []byte, specs []ReplicaSpec) *Set {
		t.Helper()
		s, err := Open(f.config(), OpenOptions{Replicas: specs, DurableLSN: ckpt, Tracking: tracking})
		if err != nil {
			t.Fatal(err)
		}
		s.MarkWritten(60, 1) // replay
		return s
	}
	specs := []ReplicaSpec{{Path: f.paths[0]}, {Path: f.paths[1], State: Stale, StaleLSN: stale1}, {Path: f.paths[2], State: Stale, StaleLSN: stale2}}
	f.set = open(trk, specs)
	if st := f.status(1); st.FullCopy || st.Marked != 16 || st.TrackLSN != stale1 {
		t.Fatalf("replica 1 after reopen: %+v", st)
	}
	if st := f.status(2); st.FullCopy || st.Marked != 3 {
		t.Fatalf("replica 2 after reopen: %+v", st)
	}
	for _, id := range []int{2, 1} {
		if _, err := f.set.Reopen(id); err != nil {
			t.Fatal(err)
		}
		if _, err := f.resync(id, 0); err != nil {
			t.Fatal(err)
		}
	}
	f.checkReplicas(0, 1, 2)
	f.set.Close()

	// Without the tracking state, replica 1 (stale before the checkpoint)
	// needs a full copy; a stale LSN older than its tracking bitmap too.
	specs[2].StaleLSN = ckpt
	f.set = open(nil, specs)
	if st := f.status(1); !st.FullCopy {
		t.Fatalf("no tracking state: replica 1 %+v", st)
	}
	if st := f.status(2); st.FullCopy || st.Marked != 1 {
		t.Fatalf("no tracking state, stale at the checkpoint: replica 2 %+v", st)
	}
	f.set.Close()
	specs[1].StaleLSN = stale1 - 1 // older than its tracking bitmap
	f.set = open(trk, specs)
	if st := f.status(1); !st.FullCopy {
		t.Fatalf("stale LSN older than the tracking bitmap: %+v", st)
	}
	if _, err := f.set.Reopen(1); err != nil {
		t.Fatal(err)
	}
	res, err := f.resync(1, 0)
	if err != nil || !res.FullCopy {
		t.Fatalf("full copy: %+v, %v", res, err)
	}
	f.checkReplicas(0, 1)
}

// An in-sync replica whose file is gone at Open becomes stale at the
// durable LSN; a new file in its directory means a full copy.
func TestOpenMissingReplica(t *testing.T) {
	f := newFixture(t, 2)
	f.mustWrite(0, 20, 1)
	f.set.Close()
	if err := f.mem.Remove(f.paths[1]); err != nil {
		t.Fatal(err)
	}
	s, err := Open(f.config(), OpenOptions{Replicas: []ReplicaSpec{{Path: f.paths[0]}, {Path: f.paths[1]}}, DurableLSN: 7})
	if err != nil {
		t.Fatal(err)
	}
	f.set = s
	st := f.status(1)
	if st.State != Stale || st.Available || st.StaleLSN != 7 || st.FullCopy {
		t.Fatalf("missing replica: %+v", st)
	}
	if err := f.set.Sync(); err != nil || f.acks.Load() == 0 {
		t.Fatalf("the change must be acknowledged by the next Sync: %v", err)
	}
	created, err := f.set.Reopen(1)
	if err != nil || !created || !f.status(1).FullCopy {
		t.Fatalf("reopen: created %v, %v", created, err)
	}
	if res, err := f.resync(1, 0); err != nil || res.Copied != 20 {
		t.Fatalf("full copy: %+v, %v", res, err)
	}
	f.checkReplicas(0, 1)
	f.set.Close()

	// Both missing: Open fails and names the file.
	f.mem.Remove(f.paths[0])
	f.mem.Remove(f.paths[1])
	if _, err := Open(f.config(), OpenOptions{Replicas: []ReplicaSpec{{Path: f.paths[0]}, {Path: f.paths[1]}}}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("no replica: %v", err)
	}
}

// The rate limit paces a resync.
func TestResyncRate(t *testing.T) {
	f := newFixture(t, 2)
	if err := f.set.Detach(1, 0); err != nil {
		t.Fatal(err)
	}
	f.mustWrite(0, 4096, 1) // 2 MiB: two copy chunks (stripeBytes)
	if _, err := f.set.Reopen(1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := f.resync(1, 4<<20); err != nil {
		t.Fatal(err)
	}
	// 2 MiB at 4 MiB/s: the second chunk starts after about 0.25 s.
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("resync of 2 MiB at 4 MiB/s took %v", d)
	}
}

func FuzzDecodeTracking(f *testing.F) {
	s := newBlockSet()
	s.SetRange(3, 10)
	s.SetRange(70000, 5)
	f.Add(encodeTracking(testID, []trackEntry{{id: 1, trackLSN: 5, track: s, synced: newBlockSet()}, {id: 2, synced: s}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeTracking(b, testID, 1<<24)
		if err != nil {
			return
		}
		var entries []trackEntry
		for _, e := range m {
			entries = append(entries, e)
		}
		if _, err := decodeTracking(encodeTracking(testID, entries), testID, 1<<24); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
	})
}
