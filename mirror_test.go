package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv"
)

// The mirror tests: DESIGN "Mirrors" and issue 3's "Must show" 1-9. Each
// runs a database with mirrors on a crashable MemFS behind errorfs
// (mirror_helpers_test.go). The device-level counterparts are in mirror/.

func TestMirrorsBasic(t *testing.T) {
	e := newMirrorEnv(t, 3)
	db := e.open()
	for i := range 40 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	e.del(db, "k07")
	e.checkModel(db)
	e.checkIdentical(db, 0, 1, 2)
	sts := db.Replicas()
	if len(sts) != 3 || sts[2].Path != "db/m2/heap" {
		t.Fatalf("replicas: %+v", sts)
	}
	for _, st := range sts {
		if st.State != heapkv.ReplicaInSync || !st.Available {
			t.Fatalf("replica %+v", st)
		}
	}
	mustClose(t, db)
	// The MANIFEST keeps the mirrors: a later Open need not name them.
	e.mirrors = nil
	db = e.open()
	defer mustClose(t, db)
	if n := len(db.Replicas()); n != 3 {
		t.Fatalf("%d replicas after reopen", n)
	}
	if st, _ := db.Stats(); st.Replicas != 3 || st.ReplicasInSync != 3 {
		t.Fatalf("stats: %d replicas, %d in sync", st.Replicas, st.ReplicasInSync)
	}
	e.checkModel(db)
}

// Must show 1: detach and attach with no writes in between copies nothing.
func TestMirrorDetachAttachNoWrites(t *testing.T) {
	e := newMirrorEnv(t, 2)
	db := e.open()
	defer mustClose(t, db)
	for i := range 30 {
		e.put(db, fmt.Sprintf("k%d", i))
	}
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	st := wantState(t, db, 1, heapkv.ReplicaStale)
	if !st.Detached || st.BlocksToSync != 0 || st.FullCopy {
		t.Fatalf("after detach: %+v", st)
	}
	if err := db.DetachReplica(0); !errors.Is(err, heapkv.ErrNoReplica) {
		t.Fatalf("detaching the last in-sync replica: %v", err)
	}
	e.checkModel(db) // served by replica 0
	if st := attach(t, db, 1); st.BlocksCopied != 0 || st.LastFullCopy {
		t.Fatalf("attach copied %d blocks (full %v), want 0", st.BlocksCopied, st.LastFullCopy)
	}
	e.checkIdentical(db, 0, 1)
}

// Must show 2: detach, then write, overwrite and delete; attach copies
// exactly the blocks written since that are still live, and every replica
// then holds identical bytes for every live value.
func TestMirrorDetachChangesAttach(t *testing.T) {
	e := newMirrorEnv(t, 2)
	db := e.open()
	defer mustClose(t, db)
	for i := range 60 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	changed := map[string]bool{}
	for i := range 60 {
		k := fmt.Sprintf("k%02d", i)
		switch i % 5 {
		case 0: // overwritten (freed blocks are reused, which is a change too)
			e.put(db, k)
			changed[k] = true
		case 1:
			e.del(db, k)
		case 2: // written twice: the first copy is freed
			e.put(db, k)
			e.put(db, k)
			changed[k] = true
		}
	}
	for i := range 10 {
		k := fmt.Sprintf("new%d", i)
		e.put(db, k)
		changed[k] = true
	}
	e.put(db, "gone")
	e.del(db, "gone")
	if err := db.Sync(); err != nil { // frees become reusable: not live
		t.Fatal(err)
	}
	want := len(e.liveBlocks(db, changed))
	st := attach(t, db, 1)
	if st.BlocksCopied != int64(want) {
		t.Fatalf("attach copied %d blocks, want exactly the %d changed and live ones", st.BlocksCopied, want)
	}
	t.Logf("copied %d blocks of %d allocated", want, func() int64 { s, _ := db.Stats(); return s.HeapAllocBytes / mBS }())
	e.checkIdentical(db, 0, 1)
	// Replica 1 alone serves every value.
	if err := db.DetachReplica(0); err != nil {
		t.Fatal(err)
	}
	e.checkModel(db)
}

// Must show 3: the tracking bitmap of a stale replica keeps every mark
// while it is stale: across checkpoints, a reopen, and another replica
// going stale and coming back.
func TestMirrorTrackingKeepsMarks(t *testing.T) {
	e := newMirrorEnv(t, 3)
	db := e.open()
	for i := range 20 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	if err := db.DetachReplica(2); err != nil {
		t.Fatal(err)
	}
	written := map[uint64]bool{} // every block written since: marks include freed ones
	for round := range 6 {
		for i := range 10 {
			k := fmt.Sprintf("k%02d", (round*7+i)%25)
			e.put(db, k)
			bl, _ := heapkv.ValueBlocks(db, []byte(k))
			for _, b := range bl {
				written[b] = true
			}
		}
		switch round {
		case 1:
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		case 2:
			if err := db.DetachReplica(1); err != nil {
				t.Fatal(err)
			}
		case 3:
			mustClose(t, db)
			db = e.open()
		case 4:
			attach(t, db, 1)
		}
		if st := status(t, db, 2); st.BlocksToSync != int64(len(written)) || st.FullCopy {
			t.Fatalf("round %d: replica 2 has %d blocks to sync (full %v), want %d", round, st.BlocksToSync, st.FullCopy, len(written))
		}
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	changed := map[string]bool{}
	for k := range e.model {
		changed[k] = true
	}
	live := e.liveBlocks(db, changed)
	want := 0
	for b := range written {
		if live[b] {
			want++
		}
	}
	if st := attach(t, db, 2); st.BlocksCopied != int64(want) {
		t.Fatalf("copied %d, want %d", st.BlocksCopied, want)
	}
	e.checkIdentical(db, 0, 1, 2)
	mustClose(t, db)
}

// Must show 4: with no tracking bitmap that covers the stale LSN (the
// tracking state is lost, or the replica is new), attach copies every
// allocated block and nothing else.
func TestMirrorFullCopy(t *testing.T) {
	e := newMirrorEnv(t, 2)
	db := e.open()
	for i := range 50 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		e.del(db, fmt.Sprintf("k%02d", i))
		e.put(db, fmt.Sprintf("n%02d", i))
	}
	mustClose(t, db) // checkpoints: the stale LSN is now older than the log
	names, _ := e.mem.List(mdbDir)
	removed := 0
	for _, n := range names {
		if strings.HasPrefix(n, "tracking-") {
			if err := e.mem.Remove(mdbDir + "/" + n); err != nil {
				t.Fatal(err)
			}
			removed++
		}
	}
	if removed != 1 {
		t.Fatalf("found %d tracking files in %v", removed, names)
	}
	db = e.open()
	st := wantState(t, db, 1, heapkv.ReplicaStale)
	if !st.FullCopy || !strings.Contains(st.Cause, "no tracking bitmap") {
		t.Fatalf("without tracking state: %+v", st)
	}
	stats, _ := db.Stats()
	if st := attach(t, db, 1); !st.LastFullCopy || st.BlocksCopied != stats.HeapAllocBytes/mBS {
		t.Fatalf("full copy copied %d blocks, want the %d allocated", st.BlocksCopied, stats.HeapAllocBytes/mBS)
	}
	e.checkIdentical(db, 0, 1)
	mustClose(t, db)

	// A new, empty mirror on an existing database: a full copy of the
	// allocated blocks only, started by Open.
	e.mirrors = append(e.mirrors, "m2")
	e.auto = true
	db = e.open()
	defer mustClose(t, db)
	st = attach(t, db, 2) // waits for the automatic attach
	stats, _ = db.Stats()
	if !st.LastFullCopy || st.BlocksCopied != stats.HeapAllocBytes/mBS {
		t.Fatalf("new mirror: copied %d blocks (full %v), want the %d allocated", st.BlocksCopied, st.LastFullCopy, stats.HeapAllocBytes/mBS)
	}
	e.checkIdentical(db, 0, 1, 2)
}

// A mirror directory holding another database's heap, or a damaged one, is
// refused with an error that names the file, and nothing is written.
func TestMirrorForeignDir(t *testing.T) {
	e := newMirrorEnv(t, 2)
	other := newMirrorEnv(t, 1)
	other.mem = e.mem
	other.fs = e.fs
	db := openTestDB(t, "other", other.options())
	mustClose(t, db)
	if err := e.mem.MkdirAll(mdbDir+"/m1", 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, e, "other/heap", mdbDir+"/m1/heap")
	if _, err := heapkv.Open(mdbDir, e.options()); !errors.Is(err, heapkv.ErrCorrupt) || !strings.Contains(err.Error(), "m1/heap") {
		t.Fatalf("new database, foreign mirror: %v", err)
	}
	if err := e.mem.RemoveAll(mdbDir + "/m1"); err != nil {
		t.Fatal(err)
	}
	e.mirrors = nil
	db = e.open()
	e.put(db, "a")
	mustClose(t, db)
	// An existing database given a foreign mirror.
	if err := e.mem.MkdirAll(mdbDir+"/m1", 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, e, "other/heap", mdbDir+"/m1/heap")
	e.mirrors = []string{"m1"}
	if _, err := heapkv.Open(mdbDir, e.options()); !errors.Is(err, heapkv.ErrCorrupt) || !strings.Contains(err.Error(), "m1/heap") {
		t.Fatalf("existing database, foreign mirror: %v", err)
	}
}

func copyFile(t *testing.T, e *mirrorEnv, from, to string) {
	t.Helper()
	writeFileMem(t, e, to, readFileMem(t, e, from))
}

// writeFileMem makes p hold exactly b (replacing any file there). It writes
// a copy: under -race (Pebble's invariants) the MemFS scribbles over the
// buffer a Write was given.
func writeFileMem(t *testing.T, e *mirrorEnv, p string, b []byte) {
	t.Helper()
	f, err := e.mem.Create(p, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Clone(b)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readFileMem(t *testing.T, e *mirrorEnv, p string) []byte {
	t.Helper()
	f, err := e.mem.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// A replica whose writes or syncs fail goes stale by itself; the database
// keeps serving. Open attaches it again once it works, and the resync
// copies only what it missed. When every replica fails, writes fail.
func TestMirrorWriteErrors(t *testing.T) {
	for name, kind := range map[string]errorfs.OpKind{"write": errorfs.OpFileWriteAt, "sync": errorfs.OpFileSyncData} {
		t.Run(name, func(t *testing.T) {
			e := newMirrorEnv(t, 2)
			db := e.open()
			for i := range 20 {
				e.put(db, fmt.Sprintf("k%02d", i))
			}
			e.inj.failPath(replicaFile(1), kind)
			changed := map[string]bool{}
			for i := range 10 {
				k := fmt.Sprintf("k%02d", i)
				e.put(db, k) // succeeds: replica 0 takes it
				changed[k] = true
			}
			st := wantState(t, db, 1, heapkv.ReplicaStale)
			if st.Detached || !strings.Contains(st.Cause, "injected") {
				t.Fatalf("failed replica: %+v", st)
			}
			if s, _ := db.Stats(); s.ReplicasInSync != 1 {
				t.Fatalf("stats: %d in sync", s.ReplicasInSync)
			}
			e.checkModel(db)
			mustClose(t, db)
			e.inj.heal()
			e.auto = true
			db = e.open()
			dbFailed := false
			defer func() {
				// A failed sync fails the database: Close says so.
				if err := db.Close(); (err != nil) != dbFailed || (err != nil && !errors.Is(err, heapkv.ErrFailed)) {
					t.Errorf("Close: %v (database failed: %v)", err, dbFailed)
				}
			}()
			want := len(e.liveBlocks(db, changed))
			if st := attach(t, db, 1); st.BlocksCopied != int64(want) {
				t.Fatalf("resync after the failure copied %d blocks, want %d", st.BlocksCopied, want)
			}
			e.checkIdentical(db, 0, 1)

			// Every replica failing: the write fails.
			e.inj.failPath(mdbDir, kind)
			err := db.Put([]byte("x"), value("x", 1))
			e.inj.heal()
			if err == nil {
				t.Fatal("a write that no replica took succeeded")
			}
			dbFailed = errors.Is(err, heapkv.ErrFailed)
		})
	}
}

// Must show 7: three replicas fail at different LSNs and come back in a
// different order; each is resynced from an in-sync replica with exactly
// the blocks it missed.
func TestMirrorThreeReplicasStaggered(t *testing.T) {
	e := newMirrorEnv(t, 3)
	db := e.open()
	defer mustClose(t, db)
	keys := func(from, n int) {
		for i := range n {
			e.put(db, fmt.Sprintf("k%02d", (from+i)%40))
		}
	}
	keys(0, 40)
	missed := []map[string]bool{{}, {}, {}}
	note := func(ids []int, from, n int) {
		for _, id := range ids {
			for i := range n {
				missed[id][fmt.Sprintf("k%02d", (from+i)%40)] = true
			}
		}
	}
	// Replica 1 fails (writes) at one LSN, replica 2 (syncs) later.
	e.inj.failPath(replicaFile(1), errorfs.OpFileWriteAt)
	keys(0, 10)
	note([]int{1}, 0, 10)
	e.inj.failPath(replicaFile(2), errorfs.OpFileSyncData)
	keys(10, 10)
	note([]int{1, 2}, 10, 10)
	e.inj.heal()
	wantState(t, db, 1, heapkv.ReplicaStale)
	s1, s2 := status(t, db, 1), wantState(t, db, 2, heapkv.ReplicaStale)
	if s1.StaleLSN >= s2.StaleLSN {
		t.Fatalf("stale LSNs %d and %d", s1.StaleLSN, s2.StaleLSN)
	}
	check := func(id int) {
		t.Helper()
		if err := db.Sync(); err != nil {
			t.Fatal(err)
		}
		want := len(e.liveBlocks(db, missed[id]))
		st := attach(t, db, id)
		if st.BlocksCopied != int64(want) || st.Source == id || st.LastFullCopy {
			t.Fatalf("replica %d: copied %d from %d (full %v), want %d", id, st.BlocksCopied, st.Source, st.LastFullCopy, want)
		}
		missed[id] = map[string]bool{}
	}
	check(2) // the later one first
	keys(20, 10)
	note([]int{1}, 20, 10)
	// Replica 0 goes: now replicas 1 (stale) and 0 (detached) are out,
	// and replica 2, itself resynced, is the only source.
	if err := db.DetachReplica(0); err != nil {
		t.Fatal(err)
	}
	keys(30, 5)
	note([]int{0, 1}, 30, 5)
	check(1)
	keys(35, 5)
	note([]int{0}, 35, 5)
	check(0)
	e.checkIdentical(db, 0, 1, 2)
	e.checkModel(db)
}

// The context of AttachReplica cancels it; the progress is kept.
func TestMirrorAttachCancel(t *testing.T) {
	e := newMirrorEnv(t, 2)
	e.rate = 64 << 10
	db := e.open()
	defer mustClose(t, db)
	if err := db.DetachReplica(1); err != nil {
		t.Fatal(err)
	}
	// Enough to copy that the copy spans several 256-block stripe runs: at
	// 64 KiB/s it cannot finish within the 300 ms (with 60 keys the blocks
	// to copy sometimes fit one run, copied at once, and the attach
	// finished).
	for i := range 200 {
		e.put(db, fmt.Sprintf("k%03d", i))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := db.AttachReplica(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled attach: %v", err)
	}
	st := wantState(t, db, 1, heapkv.ReplicaStale)
	if st.BlocksSynced == 0 || st.BlocksCopied != st.BlocksSynced {
		t.Fatalf("progress after cancel: %+v", st)
	}
}

// The heap in the data directory lost while closed: Open serves from the
// mirror, and attaching recreates the file with a full copy. With no
// in-sync replica left, Open fails and names the file.
func TestMirrorPrimaryLost(t *testing.T) {
	e := newMirrorEnv(t, 2)
	db := e.open()
	for i := range 30 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	mustClose(t, db)
	if err := e.mem.Remove(replicaFile(0)); err != nil {
		t.Fatal(err)
	}
	db = e.open()
	st := wantState(t, db, 0, heapkv.ReplicaStale)
	if st.Available || st.FullCopy {
		t.Fatalf("lost primary: %+v", st)
	}
	e.checkModel(db) // from replica 1
	stats, _ := db.Stats()
	if st := attach(t, db, 0); !st.LastFullCopy || st.BlocksCopied != stats.HeapAllocBytes/mBS {
		t.Fatalf("recreated primary: copied %d (full %v), want %d", st.BlocksCopied, st.LastFullCopy, stats.HeapAllocBytes/mBS)
	}
	e.checkIdentical(db, 0, 1)
	mustClose(t, db)
	e.mem.Remove(replicaFile(0))
	e.mem.Remove(replicaFile(1))
	if _, err := heapkv.Open(mdbDir, e.options()); !errors.Is(err, heapkv.ErrCorrupt) || !strings.Contains(err.Error(), "heap is missing") {
		t.Fatalf("no replica left: %v", err)
	}
}

// Scrub is paced by Options.ScrubRate and reports progress in Stats.
func TestMirrorScrubRate(t *testing.T) {
	e := newMirrorEnv(t, 3)
	e.srate = 400 << 10
	db := e.open()
	defer mustClose(t, db)
	for i := range 40 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	start := time.Now()
	rep, err := db.Scrub(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The last value's read may start once all but it are paid for.
	if least := time.Duration(float64(rep.BytesRead-20<<10) / float64(e.srate) * float64(time.Second)); time.Since(start) < least {
		t.Fatalf("scrub of %d bytes at %d B/s took %v, want at least %v", rep.BytesRead, e.srate, time.Since(start), least)
	}
	if s, _ := db.Stats(); s.ScrubValues != 40 || s.ScrubBytes != rep.BytesRead || s.ScrubRunning {
		t.Fatalf("stats after scrub: values %d, bytes %d, running %v", s.ScrubValues, s.ScrubBytes, s.ScrubRunning)
	}
}
