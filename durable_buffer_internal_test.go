package heapkv

import "testing"

// TestDurableRecordsWaitForTheirFlush: the records of durable groups wait
// in the log's buffer and are written by the flush that makes them
// durable, all of them in one write call (appendGroup). The file system
// holds a flush of the log while six more durable writes are appended, one
// group each: none of them writes the log meanwhile, none returns, and
// the next flush writes them with one call.
func TestDurableRecordsWaitForTheirFlush(t *testing.T) {
	h, db, logWrites := openWithHeldFlush(t, ".log")
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
