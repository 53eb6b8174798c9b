package heapkv_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/internal/testfs"
)

// logSyncHold holds every flush of a log segment after the first one
// once armed, until released.
type logSyncHold struct {
	armed    atomic.Bool
	seen     atomic.Int64
	held     atomic.Int64
	reached  chan struct{}
	once     sync.Once
	released chan struct{}
}

func (h *logSyncHold) hook(op testfs.Op) {
	if !h.armed.Load() || !op.Kind.IsSync() || !strings.HasSuffix(op.Path, ".log") {
		return
	}
	if h.seen.Add(1) == 1 {
		return
	}
	h.held.Add(1)
	h.once.Do(func() { close(h.reached) })
	<-h.released
}

// TestVouchRecordHoldsNoWriter: Sync with deferred frees waiting flushes
// everything, then writes a vouch record and flushes it. While that second
// log flush is held by the file system, NoSync writes go on and complete:
// the vouch record is not a group the pipeline must flush before it applies
// the groups after it. Once the flush is let go, Sync returns and every
// write is there, after a reopen too.
func TestVouchRecordHoldsNoWriter(t *testing.T) {
	h := &logSyncHold{reached: make(chan struct{}), released: make(chan struct{})}
	mem := vfs.NewMem()
	opts := func() *heapkv.Options {
		o := &heapkv.Options{NoSync: true, NoSyncFlushBytes: 1 << 30, CheckpointLogBytes: -1,
			BlockSize: 512, SegmentSize: 64 * 512, InlineThreshold: 64}
		heapkv.SetFS(o, testfs.Wrap(mem, h.hook))
		heapkv.SetMarkDelay(o, time.Hour)
		return o
	}
	db := openTestDB(t, "db", opts())
	key := func(i int) []byte { return fmt.Appendf(nil, "k%04d", i) }
	value := func(i, v int) []byte { return bytes.Repeat([]byte{byte('a' + v)}, 600+i) }
	for v := range 2 { // the overwrites leave frees waiting for a vouch
		for i := range 50 {
			if err := db.Put(key(i), value(i, v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	h.armed.Store(true)
	synced := make(chan error, 1)
	go func() { synced <- db.Sync() }()
	select {
	case <-h.reached:
	case err := <-synced:
		t.Fatalf("Sync returned (%v) after %d log flushes: it wrote no vouch record, so the test proves nothing", err, h.seen.Load())
	case <-time.After(time.Minute):
		t.Fatal("no second log flush within a minute")
	}
	wrote := make(chan error, 1)
	go func() {
		for i := range 50 {
			if err := db.Put(key(i), value(i, 2)); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(h.released)
		t.Fatal("NoSync writes waited for the held flush of the vouch record")
	}
	close(h.released)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTestDB(t, "db", opts()) // closed and checked at cleanup
	for i := range 50 {
		if got, err := db.Get(key(i)); err != nil || !bytes.Equal(got, value(i, 2)) {
			t.Fatalf("Get(%s) = %d bytes, %v", key(i), len(got), err)
		}
	}
}
