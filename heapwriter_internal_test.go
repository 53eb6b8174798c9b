package heapkv

import (
	"bytes"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestHeapWriterWritesCarriedValuesPerFlush holds a log flush while six
// durable writes, each a group of its own, are appended. Their values are
// carried, so none of them may be written to the heap by the leader: the
// heap sees no write until the next flush starts, and then one write for
// all six (their blocks are adjacent: the leader's preferred cursor). None
// returns before its flush, and each reads back.
func TestHeapWriterWritesCarriedValuesPerFlush(t *testing.T) {
	h, db, heapWrites := openWithHeldFlush(t, "/heap")
	var held int64
	writes := h.appendDuringFlush(t, db, 6, func() {
		// The heap writer, kicked as the held flush started, writes
		// value 0.
		for deadline := time.Now().Add(10 * time.Second); db.heapQueued() == 0 || db.heapw.written.Load() < db.heapQueued(); {
			if time.Now().After(deadline) {
				t.Fatal("the heap writer did not write value 0 within 10s of its flush's start")
			}
			time.Sleep(100 * time.Microsecond)
		}
		held = heapWrites.Load()
	})
	if n := heapWrites.Load() - held; n != 0 {
		t.Fatalf("%d heap writes while six durable groups were appended during a flush, want 0: their values wait for the heap writer", n)
	}
	h.release(t, db, writes)
	if n := heapWrites.Load() - held; n != 1 {
		t.Fatalf("the six values took %d heap writes, want 1 (one coalesced pass)", n)
	}
}

// TestHeapWriterTicketsOutliveGivenUpGroups queues a group's values, drains
// them as the leader does before it gives the group up (commitGroup's
// abort), then queues the next group with the same LSNs, as the next group
// after a given-up one gets. The second group must not count as written
// until a drain has written it, and then its blocks hold its value.
func TestHeapWriterTicketsOutliveGivenUpGroups(t *testing.T) {
	o := &Options{}
	SetFS(o, vfs.NewMem())
	db := openTestDB(t, "db", o)
	bs := db.geom.BlockSize
	newGroup := func(fill byte) *group {
		claim, err := db.alloc.Allocate(2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.alloc.Abort(claim) })
		r := &commitReq{ops: []preparedOp{{deferred: true, carry: bytes.Repeat([]byte{fill}, 2*bs), claim: claim}}}
		return &group{first: 100, reqs: []*commitReq{r}}
	}
	queue := func(g *group) {
		db.commit.mu.Lock()
		defer db.commit.mu.Unlock()
		db.queueCarried(g)
	}

	given := newGroup('a')
	queue(given)
	db.drainCarried()
	next := newGroup('b')
	queue(next)
	if next.last() != given.last() {
		t.Fatalf("the groups' LSNs differ (%d, %d): the test exercises nothing", next.last(), given.last())
	}
	if db.heapWritten(next) {
		t.Fatal("a group queued after a drain counts as written before any drain took it")
	}
	db.drainCarried()
	if !db.heapWritten(next) {
		t.Fatal("a drained group does not count as written")
	}
	got := make([]byte, 2*bs)
	if err := db.heap.ReadAt(got, next.reqs[0].ops[0].claim.Extents[0].Start); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, next.reqs[0].ops[0].carry) {
		t.Fatalf("the drained group's blocks hold %q..., want its value", got[:4])
	}
}
