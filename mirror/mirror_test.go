package mirror

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

func TestWriteReadAllReplicas(t *testing.T) {
	f := newFixture(t, 3)
	f.mustWrite(0, 3, 1)
	f.mustWrite(10, 1, 2)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	f.checkReplicas(0, 1, 2)
	p := make([]byte, 2*testBS)
	if err := f.set.ReadAt(p, 1); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, append(block(1, 1), block(2, 1)...)) {
		t.Fatal("ReadAt returned the wrong bytes")
	}
	// A block never written reads as zeros.
	if err := f.set.ReadAt(p[:testBS], 100); err != nil || !bytes.Equal(p[:testBS], make([]byte, testBS)) {
		t.Fatalf("unwritten block: %v", err)
	}
}

// Must show 1: detach and attach with no writes in between copies nothing.
func TestDetachAttachNoWrites(t *testing.T) {
	f := newFixture(t, 2)
	f.mustWrite(0, 50, 1)
	if err := f.set.Detach(1, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	st := f.status(1)
	mustState(t, st, Stale)
	if !st.Detached || st.Available || st.Marked != 0 || st.StaleLSN != f.curLSN() {
		t.Fatalf("after detach: %+v", st)
	}
	if _, err := f.set.Reopen(1); err != nil {
		t.Fatal(err)
	}
	res, err := f.resync(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 0 || res.FullCopy || res.Source != 0 {
		t.Fatalf("resync after no writes: %+v", res)
	}
	mustState(t, f.status(1), InSync)
	f.checkReplicas(0, 1)
}

// Must show 2 (device level): exactly the blocks written while stale and
// still allocated are copied.
func TestResyncCopiesChangedLiveBlocks(t *testing.T) {
	f := newFixture(t, 2)
	f.mustWrite(0, 100, 1)
	if err := f.set.Detach(1, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	f.mustWrite(10, 5, 2)  // overwrite in place (a reused block)
	f.mustWrite(200, 8, 3) // new blocks
	f.mustWrite(300, 4, 4)
	f.free(300, 4) // written then freed: not copied
	f.free(50, 10) // freed, never rewritten: not marked
	if got := f.status(1).Marked; got != 17 {
		t.Fatalf("marked %d blocks, want 17", got)
	}
	if _, err := f.set.Reopen(1); err != nil {
		t.Fatal(err)
	}
	res, err := f.resync(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 13 {
		t.Fatalf("copied %d blocks, want 13", res.Copied)
	}
	f.checkReplicas(0, 1)
	if f.acks.Load() == 0 {
		t.Fatal("state changes were never acknowledged")
	}
}

// A write error makes the replica stale at the LSN of its last good sync,
// with every block written since then marked; the write succeeds.
func TestWriteErrorGoesStale(t *testing.T) {
	f := newFixture(t, 2)
	f.mustWrite(0, 4, 1)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	synced := f.curLSN()
	f.mustWrite(4, 2, 1) // unsynced: replica 1 may lose it
	f.inj.fail(f.paths[1], errorfs.OpFileWriteAt)
	f.mustWrite(20, 1, 2)
	f.inj.heal()
	st := f.status(1)
	mustState(t, st, Stale)
	if st.StaleLSN != synced || st.Marked != 3 || st.Detached {
		t.Fatalf("after write error: %+v (stale LSN want %d, 3 marked)", st, synced)
	}
	f.mustWrite(30, 1, 3)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := f.status(1).Marked; got != 4 {
		t.Fatalf("marked %d, want 4", got)
	}
	if _, err := f.set.Reopen(1); err != nil {
		t.Fatal(err)
	}
	if res, err := f.resync(1, 0); err != nil || res.Copied != 4 {
		t.Fatalf("resync: %+v, %v", res, err)
	}
	f.checkReplicas(0, 1)
}

// A sync error behaves like a write error.
func TestSyncErrorGoesStale(t *testing.T) {
	f := newFixture(t, 2)
	f.mustWrite(0, 4, 1)
	f.inj.fail(f.paths[0], errorfs.OpFileSyncData)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	f.inj.heal()
	st := f.status(0)
	mustState(t, st, Stale)
	if st.Marked != 4 {
		t.Fatalf("marked %d, want the 4 unsynced blocks", st.Marked)
	}
	// Reads now come from replica 1.
	p := make([]byte, testBS)
	if err := f.set.ReadAt(p, 2); err != nil || !bytes.Equal(p, block(2, 1)) {
		t.Fatalf("read after failover: %v", err)
	}
}

// The last in-sync replica never goes stale: the operation fails instead.
func TestLastReplicaErrorFails(t *testing.T) {
	f := newFixture(t, 2)
	if err := f.set.Detach(1, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.set.Detach(0, 0); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("detaching the last replica: %v", err)
	}
	f.inj.fail(f.paths[0], errorfs.OpFileWriteAt, errorfs.OpFileSyncData)
	if err := f.write(0, 1, 1); !isInjected(err) {
		t.Fatalf("write to the last replica: %v", err)
	}
	if err := f.set.Sync(); !isInjected(err) {
		t.Fatalf("sync of the last replica: %v", err)
	}
	mustState(t, f.status(0), InSync)
}

// Must show 3 (device level): the tracking bitmap keeps every mark while
// the replica is stale, across other replicas going stale and coming back.
func TestTrackingKeepsMarks(t *testing.T) {
	f := newFixture(t, 3)
	if err := f.set.Detach(2, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	want := int64(0)
	for i := range 40 {
		f.mustWrite(uint64(i*3), 2, uint64(i))
		want += 2
		switch i {
		case 10:
			if err := f.set.Detach(1, f.curLSN()); err != nil {
				t.Fatal(err)
			}
		case 30:
			if _, err := f.set.Reopen(1); err != nil {
				t.Fatal(err)
			}
			if res, err := f.resync(1, 0); err != nil || res.Copied != 40 {
				t.Fatalf("resync of 1: %+v, %v", res, err)
			}
		}
		if got := f.status(2).Marked; got != want {
			t.Fatalf("after write %d: replica 2 has %d marks, want %d", i, got, want)
		}
	}
	if _, err := f.set.Reopen(2); err != nil {
		t.Fatal(err)
	}
	if res, err := f.resync(2, 0); err != nil || res.Copied != want {
		t.Fatalf("resync of 2: %+v, %v", res, err)
	}
	f.checkReplicas(0, 1, 2)
}

// ReadVerified repairs a bad copy from a good one and never the other way.
func TestReadVerifiedRepairs(t *testing.T) {
	f := newFixture(t, 3)
	f.mustWrite(0, 4, 7)
	want := bytes.Repeat([]byte{0}, 0)
	for b := range uint64(4) {
		want = append(want, block(b, 7)...)
	}
	check := func(p []byte) bool { return bytes.Equal(p, want) }
	ranges := []Range{{0, 2}, {2, 2}}
	f.writeFile(0, 1, block(1, 99)) // a bad copy on replica 0
	p := make([]byte, len(want))
	res, err := f.set.ReadVerified(p, ranges, check, false)
	if err != nil || res.Source != 1 || len(res.Repaired) != 1 || res.Repaired[0] != 0 || !check(p) {
		t.Fatalf("read repair: %+v, %v", res, err)
	}
	f.checkReplicas(0, 1, 2)

	// Scrub mode reads every copy: a zeroed block on replica 2.
	f.writeFile(2, 3, make([]byte, testBS))
	res, err = f.set.ReadVerified(p, ranges, check, true)
	if err != nil || res.Copies != 3 || len(res.Bad) != 1 || res.Bad[0] != 2 || len(res.Repaired) != 1 {
		t.Fatalf("scrub: %+v, %v", res, err)
	}
	f.checkReplicas(0, 1, 2)

	// A read error is repaired too.
	f.inj.fail(f.paths[0], errorfs.OpFileReadAt)
	res, err = f.set.ReadVerified(p, ranges, check, false)
	f.inj.heal()
	if err != nil || len(res.Unreadable) != 1 || res.Source != 1 {
		t.Fatalf("read error: %+v, %v", res, err)
	}

	// Every copy bad: an error, and nothing is rewritten.
	for i := range 3 {
		f.writeFile(i, 2, block(2, uint64(100+i)))
	}
	if _, err := f.set.ReadVerified(p, ranges, check, true); !errors.Is(err, ErrNoGoodCopy) {
		t.Fatalf("every copy bad: %v", err)
	}
	for i := range 3 {
		if !bytes.Equal(f.readFile(i, 2), block(2, uint64(100+i))) {
			t.Fatalf("replica %d was rewritten though no copy was good", i)
		}
	}
}

// Sync flushes only when something was written since the last Sync that
// reached every replica; a view change (a replica leaving) counts as a
// write, and a failed Sync is retried by the next one.
func TestSyncSkipsWhenClean(t *testing.T) {
	f := newFixture(t, 2)
	sync := func(want int64) {
		t.Helper()
		before := f.set.Syncs()
		if err := f.set.Sync(); err != nil {
			t.Fatal(err)
		}
		if got := f.set.Syncs() - before; got != want {
			t.Fatalf("Sync issued %d fsyncs, want %d", got, want)
		}
	}
	sync(2) // the first Sync after open always flushes
	sync(0)
	f.mustWrite(0, 2, 1)
	sync(2)
	sync(0)
	// A Sync that fails on one replica does not count as clean.
	f.mustWrite(4, 1, 2)
	f.inj.fail(f.paths[1], errorfs.OpFileSyncData)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	f.inj.heal()
	mustState(t, f.status(1), Stale)
	sync(1) // replica 1 left the view: replica 0 is flushed again
	sync(0)
	f.mustWrite(8, 1, 3)
	sync(1)
}
