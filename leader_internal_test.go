package heapkv

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/testfs"
)

// queuedWrites returns how many requests wait in the group-commit queue.
func (db *DB) queuedWrites() int {
	db.queue.mu.Lock()
	defer db.queue.mu.Unlock()
	return len(db.queue.queue)
}

// TestLeaderLeadsWhileRequestsQueue: a leader whose group is done builds
// the next group itself while requests queue, and hands leadership over
// after maxLeadRounds groups, when its own write returns. The file system
// holds each group's heap write (the leader writes a group's values:
// carried.go) until one more write has queued behind it.
func TestLeaderLeadsWhileRequestsQueue(t *testing.T) {
	var armed atomic.Bool
	gate := newOpGate()
	hook := func(op testfs.Op) {
		if armed.Load() && op.Kind == testfs.WriteAt && filepath.Base(op.Path) == heapFileName {
			gate.hold()
		}
	}
	o := &Options{NoSync: true, NoSyncFlushBytes: 1 << 30, CheckpointLogBytes: -1,
		BlockSize: 512, SegmentSize: 64 * 512, InlineThreshold: 64}
	SetFS(o, testfs.Wrap(vfs.NewMem(), hook))
	db := openTestDB(t, "db", o)
	t.Cleanup(func() { armed.Store(false); gate.open() })
	key := func(i int) []byte { return fmt.Appendf(nil, "k%03d", i) }
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 600) }
	before, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}

	armed.Store(true)
	put := func(i int) chan error { return putAsync(db, key(i), value(i)) }
	waitQueued := func() {
		for deadline := time.Now().Add(10 * time.Second); db.queuedWrites() == 0; {
			if time.Now().After(deadline) {
				t.Fatal("a write did not queue within 10s")
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	first := put(0)
	writes := []chan error{first}
	for round := 1; round <= maxLeadRounds; round++ {
		<-gate.reached // the leader writes the values of its round-th group
		writes = append(writes, put(round))
		waitQueued()
		if round > 1 {
			select {
			case err := <-first:
				t.Fatalf("the first write returned (%v) while its writer led group %d", err, round)
			default:
			}
		}
		gate.release <- struct{}{}
	}
	// The write queued during the last round leads now; the first
	// writer handed leadership to it and returns.
	<-gate.reached
	select {
	case err := <-first:
		if err != nil {
			t.Fatalf("first write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the first writer still leads after %d groups", maxLeadRounds)
	}
	armed.Store(false)
	gate.release <- struct{}{}
	for i, ch := range writes[1:] {
		if err := <-ch; err != nil {
			t.Fatalf("write %d: %v", i+1, err)
		}
	}

	after, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if n, g := after.Commits-before.Commits, after.CommitGroups-before.CommitGroups; n != maxLeadRounds+1 || g != n {
		t.Fatalf("%d writes in %d groups, want %d in as many", n, g, maxLeadRounds+1)
	}
	for i := range maxLeadRounds + 1 {
		got, err := db.Get(key(i))
		if err != nil || !bytes.Equal(got, value(i)) {
			t.Fatalf("Get(%s) = %d bytes, %v; want the value written", key(i), len(got), err)
		}
	}
}
