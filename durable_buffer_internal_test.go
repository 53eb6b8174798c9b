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

// TestDurableRecordsWaitForTheirFlush: the records of durable groups wait
// in the log's buffer and are written by the flush that makes them
// durable, all of them in one write call (appendGroup). The file system
// holds a flush of the log while six more durable writes are appended, one
// group each: none of them writes the log meanwhile, none returns, and
// the next flush writes them with one call.
func TestDurableRecordsWaitForTheirFlush(t *testing.T) {
	var armed atomic.Bool
	var logWrites atomic.Int64
	gate := newOpGate()
	hook := func(op testfs.Op) {
		if !strings.HasSuffix(op.Path, ".log") {
			return
		}
		if op.Kind == testfs.WriteAt {
			logWrites.Add(1)
		}
		if op.Kind.IsSync() && armed.CompareAndSwap(true, false) {
			gate.hold()
		}
	}
	o := &Options{CheckpointLogBytes: -1}
	SetFS(o, testfs.Wrap(vfs.NewMem(), hook))
	SetMarkDelay(o, time.Hour) // no idle mark flush in the way
	db := openTestDB(t, "db", o)
	t.Cleanup(func() { armed.Store(false); gate.open() })
	key := func(i int) []byte { return fmt.Appendf(nil, "k%d", i) }
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 1000) }
	if err := db.Put([]byte("warm"), []byte("up")); err != nil {
		t.Fatal(err)
	}

	armed.Store(true)
	put := func(i int) chan error { return putAsync(db, key(i), value(i)) }
	writes := []chan error{put(0)}
	<-gate.reached // the syncer flushes write 0's record, and is held there
	held, appended := logWrites.Load(), db.pipe.appendedLSN()
	for i := 1; i <= 6; i++ {
		writes = append(writes, put(i))
		for deadline := time.Now().Add(10 * time.Second); db.pipe.appendedLSN() < appended+base.LSN(i); {
			if time.Now().After(deadline) {
				t.Fatalf("write %d was not appended within 10s", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	if n := logWrites.Load() - held; n != 0 {
		t.Fatalf("%d log writes while six durable groups were appended during a flush, want 0: their records wait in the buffer", n)
	}
	for i, ch := range writes {
		select {
		case err := <-ch:
			t.Fatalf("write %d returned (%v) before its flush", i, err)
		default:
		}
	}
	gate.release <- struct{}{}
	for i, ch := range writes {
		if err := <-ch; err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if n := logWrites.Load() - held; n != 1 {
		t.Fatalf("the six records took %d log writes, want 1 (the next flush's)", n)
	}
	for i := range writes {
		got, err := db.Get(key(i))
		if err != nil || !bytes.Equal(got, value(i)) {
			t.Fatalf("Get(%s) = %d bytes, %v; want the value written", key(i), len(got), err)
		}
	}
}
