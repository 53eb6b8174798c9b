package heapkv

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/testfs"
)

// opGate holds the file operations a test's hook picks, one at a time:
// hold tells the test (reached) and waits for release. Once the test ends
// (open), nothing is held any more, so that Close cannot block on a
// held write or flush.
type opGate struct {
	reached chan struct{} // an op is held
	release chan struct{} // let the held op run
	stop    chan struct{} // closed by open
}

func newOpGate() *opGate {
	return &opGate{reached: make(chan struct{}), release: make(chan struct{}), stop: make(chan struct{})}
}

// hold is called by the hook for an op the test wants to hold.
func (g *opGate) hold() {
	select {
	case g.reached <- struct{}{}:
	case <-g.stop:
		return
	}
	select {
	case <-g.release:
	case <-g.stop:
	}
}

// open lets every held and later op through. Tests register it with
// t.Cleanup after opening the database, so that it runs before Close
// (cleanups run last first).
func (g *opGate) open() { close(g.stop) }

// putAsync runs db.Put(key, value) on a goroutine of its own and returns
// the channel its result comes on.
func putAsync(db *DB, key, value []byte) chan error {
	ch := make(chan error, 1)
	go func() { ch <- db.Put(key, value) }()
	return ch
}

// heldFlush is a test's scenario around one log flush the file system
// holds: its hook calls hold for the first log sync after armed is set.
type heldFlush struct {
	armed atomic.Bool
	gate  *opGate
}

// openWithHeldFlush opens a database (no background checkpoints, no idle
// mark flush) whose file system holds the first log flush after the
// scenario is armed, and counts the writes (WriteAt) to files whose names
// end in suffix. It has taken one durable write.
func openWithHeldFlush(t *testing.T, suffix string) (*heldFlush, *DB, *atomic.Int64) {
	t.Helper()
	h := &heldFlush{gate: newOpGate()}
	var writes atomic.Int64
	hook := func(op testfs.Op) {
		if op.Kind == testfs.WriteAt && strings.HasSuffix(op.Path, suffix) {
			writes.Add(1)
		}
		if strings.HasSuffix(op.Path, ".log") && op.Kind.IsSync() && h.armed.CompareAndSwap(true, false) {
			h.gate.hold()
		}
	}
	o := &Options{CheckpointLogBytes: -1}
	SetFS(o, testfs.Wrap(vfs.NewMem(), hook))
	SetMarkDelay(o, time.Hour)
	db := openTestDB(t, "db", o)
	if err := db.Put([]byte("warm"), heldFlushValue(25)); err != nil {
		t.Fatal(err)
	}
	return h, db, &writes
}

// heldFlushKey and heldFlushValue are the keys and 1,000-byte values of
// the scenario's writes.
func heldFlushKey(i int) []byte   { return fmt.Appendf(nil, "k%d", i) }
func heldFlushValue(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 1000) }

// appendDuringFlush puts key 0 durably and waits until the syncer holds
// that write's flush; then runs atHold, and puts keys 1..n, each appended
// (its own group) before the next starts. None may return before the flush
// is released; the returned channels carry their results.
func (h *heldFlush) appendDuringFlush(t *testing.T, db *DB, n int, atHold func()) []chan error {
	t.Helper()
	t.Cleanup(func() { h.armed.Store(false); h.gate.open() })
	h.armed.Store(true)
	writes := []chan error{putAsync(db, heldFlushKey(0), heldFlushValue(0))}
	<-h.gate.reached
	appended := db.pipe.appendedLSN()
	atHold()
	for i := 1; i <= n; i++ {
		writes = append(writes, putAsync(db, heldFlushKey(i), heldFlushValue(i)))
		for deadline := time.Now().Add(10 * time.Second); db.pipe.appendedLSN() < appended+base.LSN(i); {
			if time.Now().After(deadline) {
				t.Fatalf("write %d was not appended within 10s", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	for i, ch := range writes {
		select {
		case err := <-ch:
			t.Fatalf("write %d returned (%v) before its flush", i, err)
		default:
		}
	}
	return writes
}

// release lets the held flush go on, and checks that every write
// succeeded and reads back.
func (h *heldFlush) release(t *testing.T, db *DB, writes []chan error) {
	t.Helper()
	h.gate.release <- struct{}{}
	for i, ch := range writes {
		if err := <-ch; err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	for i := range writes {
		got, err := db.Get(heldFlushKey(i))
		if err != nil || !bytes.Equal(got, heldFlushValue(i)) {
			t.Fatalf("Get(%s) = %d bytes, %v; want the value written", heldFlushKey(i), len(got), err)
		}
	}
}
