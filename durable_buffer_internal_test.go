package heapkv

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/testfs"
)

// TestDurableRecordsWaitForTheirFlush: the records of durable groups wait
// in the log's buffer and are written by the flush that makes them
// durable, all of them in one write call (appendGroup). The file system
// holds a flush of the log while six more durable writes are appended, one
// group each: none of them writes the log meanwhile, none returns, and
// the next flush writes them with one call.
func TestDurableRecordsWaitForTheirFlush(t *testing.T) {
	var logWrites atomic.Int64
	h, hook := newHeldFlush(func(op testfs.Op) {
		if op.Kind == testfs.WriteAt && strings.HasSuffix(op.Path, ".log") {
			logWrites.Add(1)
		}
	})
	o := &Options{CheckpointLogBytes: -1}
	SetFS(o, testfs.Wrap(vfs.NewMem(), hook))
	SetMarkDelay(o, time.Hour) // no idle mark flush in the way
	db := openTestDB(t, "db", o)
	if err := db.Put([]byte("warm"), []byte("up")); err != nil {
		t.Fatal(err)
	}
	var held int64
	writes := h.appendDuringFlush(t, db, 6, func() { held = logWrites.Load() })
	if n := logWrites.Load() - held; n != 0 {
		t.Fatalf("%d log writes while six durable groups were appended during a flush, want 0: their records wait in the buffer", n)
	}
	h.release(t, db, writes)
	if n := logWrites.Load() - held; n != 1 {
		t.Fatalf("the six records took %d log writes, want 1 (the next flush's)", n)
	}
}
