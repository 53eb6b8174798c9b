package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv"
)

var mirrorLong = flag.Bool("heapkv.mirrorlong", false, "mirror tests: more rounds, more crash points, more writers")

// rounds returns n, or long in -heapkv.mirrorlong mode.
func rounds(n, long int) int {
	if *mirrorLong {
		return long
	}
	return n
}

// waitProgress waits until replica id's resync has copied at least n
// blocks, or the replica is in sync.
func waitProgress(t *testing.T, db *heapkv.DB, id int, n int64) {
	t.Helper()
	waitReplica(t, db, id, fmt.Sprintf("%d blocks copied", n), func(st heapkv.ReplicaStatus) bool {
		return st.State == heapkv.ReplicaInSync || (st.State == heapkv.ReplicaResyncing && st.BlocksCopied >= n)
	})
}

// Must show 5: a resync interrupted many times, by cancellation, by its
// source failing to read and by a crash, resumes each time where it
// stopped, never copies a finished block again, and ends identical. The
// crash is taken while the copy runs, with no checkpoint asked for: the
// progress that survives is what the resync saved by itself.
func TestMirrorResyncInterrupted(t *testing.T) {
	const saveBlocks = 32 // the resync saves its progress every 32 blocks copied
	e := newMirrorEnv(t, 2)
	e.rate = 2 << 20
	e.resyncSave = saveBlocks * mBS
	db := e.open()
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	changed := map[string]bool{}
	for i := range rounds(300, 1500) {
		k := fmt.Sprintf("k%04d", i)
		e.put(db, k)
		changed[k] = true
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	need := int64(len(e.liveBlocks(db, changed)))
	total, crashes := int64(0), 0
	for round := 0; ; round++ {
		before := status(t, db, 1).BlocksSynced
		step := max(need/10, 1) // copy about a tenth per round
		ctx, cancel := context.WithCancel(t.Context())
		var err error
		done := make(chan struct{})
		go func() { defer close(done); err = db.AttachReplica(ctx, 1) }()
		if round%3 == 2 {
			// A copy run ends where the next save is due, and the copier
			// saves before it copies the next run: once more than
			// saveBlocks are copied, at least one save has finished (the
			// wait leaves a margin).
			waitProgress(t, db, 1, saveBlocks+256)
			if st := status(t, db, 1); st.State == heapkv.ReplicaResyncing {
				clone := e.crashClone(vfs.CrashCloneCfg{})
				cancel()
				<-done
				last := status(t, db, 1).BlocksSynced
				mustClose(t, db)
				e.setMem(clone)
				db = e.open()
				got := wantState(t, db, 1, heapkv.ReplicaStale)
				if got.FullCopy || got.BlocksSynced < before+saveBlocks || got.BlocksSynced > last {
					t.Fatalf("round %d: after a crash mid-resync replica 1 has %d blocks synced (full %v); "+
						"%d before the round, %d when the copy stopped, saves every %d",
						round, got.BlocksSynced, got.FullCopy, before, last, saveBlocks)
				}
				t.Logf("round %d: crash mid-resync kept %d of the %d blocks copied in the round",
					round, got.BlocksSynced-before, last-before)
				total += got.BlocksSynced - before
				crashes++
				continue
			}
		} else {
			waitProgress(t, db, 1, step)
			switch round % 3 {
			case 0:
				cancel()
			case 1: // the source can no longer be read
				e.inj.failPath(replicaFile(0), errorfs.OpFileReadAt)
			}
		}
		<-done
		cancel()
		e.inj.heal()
		st := status(t, db, 1)
		total += st.BlocksCopied
		if err == nil {
			wantState(t, db, 1, heapkv.ReplicaInSync)
			break
		}
		wantState(t, db, 1, heapkv.ReplicaStale)
		if st.BlocksSynced != before+st.BlocksCopied {
			t.Fatalf("round %d: synced %d -> %d after copying %d", round, before, st.BlocksSynced, st.BlocksCopied)
		}
		t.Logf("round %d: copied %d, %d of %d synced: %v", round, st.BlocksCopied, st.BlocksSynced, need, err)
		if round > 100 {
			t.Fatal("the resync never finishes")
		}
	}
	if crashes == 0 {
		t.Fatal("the resync finished before any crash round could interrupt it")
	}
	if total != need {
		t.Fatalf("copied %d blocks over all rounds (counting only the durable progress of crashed ones), want %d: some were copied twice", total, need)
	}
	e.checkIdentical(db, 0, 1)
	if err := db.DetachReplica(0); err != nil {
		t.Fatal(err)
	}
	e.checkModel(db)
	mustClose(t, db)
}

// Must show 6: heavy concurrent writes during a resync; it finishes and
// nothing is lost.
func TestMirrorResyncConcurrentWrites(t *testing.T) {
	e := newMirrorEnv(t, 2)
	e.rate = 4 << 20
	db := e.open()
	defer mustClose(t, db)
	for i := range 200 {
		e.put(db, fmt.Sprintf("w0-%03d", i))
	}
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		e.put(db, fmt.Sprintf("w1-%03d", i))
	}
	// Writers each own a key range and a model of it.
	writers := rounds(4, 8)
	models := make([]map[string][]byte, writers)
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex // guards werr
	var werr error
	for w := range writers {
		models[w] = map[string][]byte{}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for gen := 1; ctx.Err() == nil; gen++ {
				k := fmt.Sprintf("c%d-%02d", w, rng.IntN(60))
				var err error
				if rng.IntN(4) == 0 {
					err = db.Delete([]byte(k))
					delete(models[w], k)
				} else {
					v := value(k, gen)
					err = db.Put([]byte(k), v)
					models[w][k] = v
				}
				if err != nil {
					mu.Lock()
					werr = err
					mu.Unlock()
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	before, _ := db.Stats()
	err := db.AttachReplica(t.Context(), 1)
	after, _ := db.Stats()
	time.Sleep(20 * time.Millisecond) // writes after the resync too
	stop()
	wg.Wait()
	if err != nil || werr != nil {
		t.Fatalf("attach: %v; writers: %v", err, werr)
	}
	st := wantState(t, db, 1, heapkv.ReplicaInSync)
	// The point of the test is writes racing the copy: make sure some
	// commits happened while AttachReplica ran its resync.
	during := after.Commits - before.Commits
	if during == 0 {
		t.Fatalf("no commit ran during the resync (%d blocks copied); the test did not test anything", st.BlocksCopied)
	}
	t.Logf("copied %d blocks while %d commits ran", st.BlocksCopied, during)
	for _, m := range models {
		for k, v := range m {
			e.model[k] = v
		}
	}
	e.checkIdentical(db, 0, 1)
	if err := db.DetachReplica(0); err != nil { // replica 1 alone serves every value
		t.Fatal(err)
	}
	e.checkModel(db)
	if rep, err := db.Scrub(t.Context()); err != nil || rep.BadCopies != 0 {
		t.Fatalf("scrub: %v, %v", rep, err)
	}
}

// Must show 8: crashes (CrashClone, with a random share of unsynced data
// kept) while degraded and while resyncing: recovery keeps the incremental
// path, never calls the stale replica in sync, and keeps every
// acknowledged write.
func TestMirrorCrash(t *testing.T) {
	for seed := range uint64(rounds(3, 20)) {
		t.Run(fmt.Sprint("degraded-", seed), func(t *testing.T) { crashDegraded(t, seed) })
		t.Run(fmt.Sprint("resyncing-", seed), func(t *testing.T) { crashResyncing(t, seed) })
	}
}

func crashDegraded(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 8))
	e := newMirrorEnv(t, 3)
	db := e.open()
	for i := range 50 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	// Replica 1 detached, replica 2 failing its writes.
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	e.inj.failPath(replicaFile(2), errorfs.OpFileWriteAt)
	changed := map[string]bool{}
	for i := range 40 {
		k := fmt.Sprintf("k%02d", rng.IntN(70))
		if rng.IntN(5) == 0 {
			e.del(db, k)
		} else {
			e.put(db, k)
			changed[k] = true
		}
		if i == 20 && rng.IntN(2) == 0 {
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	clone := e.crashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(seed, 3))})
	mustClose(t, db)
	e.inj.heal()
	e.setMem(clone)
	db = e.open()
	defer mustClose(t, db)
	e.checkModel(db) // every write was synced: all acknowledged
	stats, _ := db.Stats()
	for _, id := range []int{1, 2} {
		st := wantState(t, db, id, heapkv.ReplicaStale)
		if st.FullCopy {
			t.Fatalf("replica %d needs a full copy after the crash: %+v", id, st)
		}
	}
	want := int64(len(e.liveBlocks(db, changed)))
	for _, id := range []int{2, 1} {
		st := attach(t, db, id)
		if st.BlocksCopied < want || st.BlocksCopied >= stats.HeapAllocBytes/mBS || st.LastFullCopy {
			t.Fatalf("replica %d: copied %d blocks; changed %d, allocated %d", id, st.BlocksCopied, want, stats.HeapAllocBytes/mBS)
		}
	}
	e.checkIdentical(db, 0, 1, 2)
}

func crashResyncing(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 5))
	e := newMirrorEnv(t, 2)
	e.rate = 2 << 20
	db := e.open()
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		e.put(db, fmt.Sprintf("k%03d", i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- db.AttachReplica(ctx, 1) }()
	waitProgress(t, db, 1, 50+rng.Int64N(300))
	// Writes during the resync, a checkpoint that records its progress,
	// more writes, then the crash.
	for i := range 10 {
		e.put(db, fmt.Sprintf("k%03d", rng.IntN(250)))
		if i == 4 {
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	progress := status(t, db, 1).BlocksSynced
	clone := e.crashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(seed, 4))})
	cancel()
	if err := <-done; err == nil {
		t.Log("the resync finished before the crash")
	}
	mustClose(t, db)
	e.setMem(clone)
	db = e.open()
	defer mustClose(t, db)
	e.checkModel(db)
	st := status(t, db, 1)
	if st.State == heapkv.ReplicaInSync {
		// Only if it finished and recorded that before the clone.
		t.Logf("in sync after the crash")
	} else if st.FullCopy || st.BlocksSynced > progress {
		t.Fatalf("after the crash: %+v (progress before %d)", st, progress)
	}
	attach(t, db, 1)
	e.checkIdentical(db, 0, 1)
	if err := db.DetachReplica(0); err != nil {
		t.Fatal(err)
	}
	e.checkModel(db)
}

// Must show 9: bit flips, zeroed blocks and truncated replica files are
// found by reads and repaired from the good copy; Scrub finds, repairs and
// counts them all; two bad copies of one value give ErrCorrupt.
func TestMirrorCorruption(t *testing.T) {
	e := newMirrorEnv(t, 3)
	db := e.open()
	defer func() { mustClose(t, db) }()
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
		e.put(db, keys[i])
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	blocks := func(k string) []uint64 {
		bl, err := heapkv.ValueBlocks(db, []byte(k))
		if err != nil || len(bl) == 0 {
			t.Fatalf("blocks of %s: %v %v", k, bl, err)
		}
		return bl
	}

	// A bit flip on replica 0 (the one reads use): Get repairs it.
	bl := blocks(keys[0])
	e.writeBlock(0, bl[1], 7, []byte{e.readBlocks(0, bl[1:2])[7] ^ 0x10})
	e.checkModel(db)
	if got, want := e.readBlocks(0, bl), e.readBlocks(1, bl); string(got) != string(want) {
		t.Fatal("the read did not repair replica 0")
	}
	if st := status(t, db, 0); st.Repairs != 1 {
		t.Fatalf("replica 0 repairs: %d", st.Repairs)
	}
	if s, _ := db.Stats(); s.ReadRepairs != 1 {
		t.Fatalf("stats read repairs: %d", s.ReadRepairs)
	}

	// A zeroed block on replica 1 and a bit flip on replica 2: reads use
	// replica 0, so only Scrub finds them.
	e.writeBlock(1, blocks(keys[1])[0], 0, make([]byte, mBS))
	e.writeBlock(2, blocks(keys[2])[2], 100, []byte{0xff})
	// Replica 2's file truncated in the middle of the values (while the
	// database is closed: the MemFS cannot truncate an open file).
	// Block b sits at offset mOff(b) (after the header area), so the file
	// keeps blocks 0..cut-1 whole and 100 bytes of block cut: a
	// value is damaged if any of its blocks is cut or later.
	// Replica 2's bad copies are the flipped value and every value the cut
	// reaches; the flipped one may also be past the cut (the cursors place
	// values at random), so count them as a set.
	cut := blocks(keys[30])[0]
	bad2 := map[string]bool{keys[2]: true}
	for _, k := range keys {
		if slices.Max(blocks(k)) >= cut {
			bad2[k] = true
		}
	}
	mustClose(t, db)
	writeFileMem(t, e, replicaFile(2), readFileMem(t, e, replicaFile(2))[:mOff(cut)+100])
	db = e.open()
	rep, err := db.Scrub(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := int64(1 + len(bad2))
	if rep.Values != int64(len(keys)) || rep.BadCopies != want || rep.Repaired != want || rep.Unrecoverable != 0 ||
		rep.Replicas[1].BadCopies != 1 || rep.Replicas[2].BadCopies != want-1 {
		t.Fatalf("scrub: %+v, want %d bad copies", rep, want)
	}
	if rep, err := db.Scrub(t.Context()); err != nil || rep.BadCopies != 0 {
		t.Fatalf("second scrub: %v, %v", rep, err)
	}
	e.checkIdentical(db, 0, 1, 2)

	// Two bad copies of one value, one good: Get and Scrub repair both.
	bl = blocks(keys[3])
	e.writeBlock(0, bl[0], 0, make([]byte, mBS))
	e.writeBlock(1, bl[0], 0, make([]byte, mBS))
	e.checkModel(db)
	if g0, g1, g2 := e.readBlocks(0, bl), e.readBlocks(1, bl), e.readBlocks(2, bl); !bytes.Equal(g0, g2) || !bytes.Equal(g1, g2) {
		t.Fatal("a read with two bad copies did not rewrite both from the good one")
	}
	// Every copy bad: ErrCorrupt, never wrong bytes, and Scrub says so.
	bl = blocks(keys[4])
	for id := range 3 {
		e.writeBlock(id, bl[0], 3, []byte{byte(id + 1)})
	}
	if _, err := db.Get([]byte(keys[4])); !errors.Is(err, heapkv.ErrCorrupt) {
		t.Fatalf("get with every copy bad: %v", err)
	}
	rep, err = db.Scrub(t.Context())
	if !errors.Is(err, heapkv.ErrCorrupt) || rep.Unrecoverable != 1 || rep.Repaired != 0 {
		t.Fatalf("scrub with every copy bad: %v, %+v", err, rep)
	}
	if err := db.Delete([]byte(keys[4])); err != nil { // the lost value, so the rest can be checked
		t.Fatal(err)
	}
	delete(e.model, keys[4])

	// Replica 0, the one reads use, zeroed in one block and then cut short
	// in the middle of the values: plain Gets (no Scrub) serve every value
	// from another replica and rewrite replica 0.
	bl = blocks(keys[5])
	e.writeBlock(0, bl[0], 0, make([]byte, mBS))
	e.checkModel(db)
	if !bytes.Equal(e.readBlocks(0, bl), e.readBlocks(1, bl)) {
		t.Fatal("the read did not repair the zeroed block")
	}
	// This time the file keeps blocks 0..cut-2 whole and 37 bytes of
	// block cut-1, the one before the first block of keys[20]. A Get reads
	// only a value's stored bytes (Scrub above reads whole blocks), so a
	// value whose last block is cut-1 and whose tail fits in those 37
	// bytes is intact (CI once counted such a value as damaged).
	cut = blocks(keys[20])[0]
	truncated := 0
	for _, k := range keys {
		if k == keys[4] {
			continue
		}
		stored, err := heapkv.ValueStoredLen(db, []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range blocks(k) { // blocks in the value's order
			used := min(uint64(mBS), stored-uint64(i)*mBS)
			if b > cut-1 || (b == cut-1 && used > 37) {
				truncated++
				break
			}
		}
	}
	mustClose(t, db)
	writeFileMem(t, e, replicaFile(0), readFileMem(t, e, replicaFile(0))[:mOff(cut-1)+37])
	db = e.open() // the repair counters start at zero
	e.checkModel(db)
	if st, _ := db.Stats(); st.ReadRepairs != int64(truncated) {
		t.Fatalf("reads of a truncated replica 0 repaired %d values, want %d", st.ReadRepairs, truncated)
	}
	e.checkIdentical(db, 0, 1, 2)
}

// A mirror whose disk is gone at Open stays stale (its directory is not
// created); when it is back, Open attaches it and copies only what it
// missed.
func TestMirrorDiskAway(t *testing.T) {
	e := newMirrorEnv(t, 2)
	db := e.open()
	for i := range 30 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	mustClose(t, db)
	if err := e.mem.Rename(mdbDir+"/m1", "away"); err != nil {
		t.Fatal(err)
	}
	e.auto = true
	db = e.open()
	st := wantState(t, db, 1, heapkv.ReplicaStale)
	if st.Available || st.FullCopy {
		t.Fatalf("mirror away: %+v", st)
	}
	changed := map[string]bool{}
	for i := range 10 {
		k := fmt.Sprintf("k%02d", i*3)
		e.put(db, k)
		changed[k] = true
	}
	e.checkModel(db)
	mustClose(t, db)
	if _, err := e.mem.Stat(mdbDir + "/m1"); err == nil {
		t.Fatal("Open created the directory of a known mirror")
	}
	if err := e.mem.Rename("away", mdbDir+"/m1"); err != nil {
		t.Fatal(err)
	}
	db = e.open() // attaches the mirror by itself: nobody calls AttachReplica
	defer mustClose(t, db)
	want := len(e.liveBlocks(db, changed))
	if st := waitInSync(t, db, 1); st.LastFullCopy || st.BlocksCopied != int64(want) {
		t.Fatalf("mirror back: copied %d blocks (full %v), %d changed", st.BlocksCopied, st.LastFullCopy, want)
	}
	e.checkIdentical(db, 0, 1)
}

// TestMirrorDamagedHeader damages the header of a known mirror's heap file
// (a flipped bit, a file cut short inside the header, an empty file): Open
// refuses with ErrCorrupt naming the file, and leaves the file as it was.
func TestMirrorDamagedHeader(t *testing.T) {
	for _, damage := range []string{"bitflip", "truncated", "empty"} {
		t.Run(damage, func(t *testing.T) {
			e := newMirrorEnv(t, 2)
			db := e.open()
			for i := range 20 {
				e.put(db, fmt.Sprintf("k%02d", i))
			}
			mustClose(t, db)
			p := mdbDir + "/m1/heap"
			b := readFileMem(t, e, p)
			switch damage {
			case "bitflip":
				b[20] ^= 0x10
			case "truncated":
				b = b[:10]
			case "empty":
				b = nil
			}
			writeFileMem(t, e, p, b)
			_, err := heapkv.Open(mdbDir, e.options())
			if !errors.Is(err, heapkv.ErrCorrupt) || !strings.Contains(err.Error(), "m1/heap") {
				t.Fatalf("mirror with a damaged header: Open = %v, want ErrCorrupt naming m1/heap", err)
			}
			t.Logf("%s: %v", damage, err)
			fi, err := e.mem.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != int64(len(b)) {
				t.Fatalf("Open changed the damaged file: %d bytes, was %d", fi.Size(), len(b))
			}
			if len(b) > 0 && !bytes.Equal(readFileMem(t, e, p), b) {
				t.Fatal("Open changed the damaged file's bytes")
			}
		})
	}
}
