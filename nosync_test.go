package heapkv_test

// NoSync writers and device flushes: passing NoSyncFlushBytes kicks a
// background flush that no writer waits for; only twice NoSyncFlushBytes
// makes writers wait. Flushes are counted and held by the file system,
// not timed.

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/internal/testfs"
)

// flushGate is a file system hook that counts flushes (flushCounter) and,
// while closed, holds every flush until it opens.
type flushGate struct {
	flushCounter
	mu      sync.Mutex
	closed  bool
	open    chan struct{} // closed when the gate opens
	held    atomic.Int64  // flushes that reached the closed gate
	reached chan struct{} // closed when the first flush is held
	once    sync.Once
}

func (g *flushGate) hook(op testfs.Op) {
	if !op.Kind.IsSync() {
		g.flushCounter.hook(op)
		return
	}
	g.mu.Lock()
	closed, open := g.closed, g.open
	g.mu.Unlock()
	if closed {
		g.held.Add(1)
		g.once.Do(func() { close(g.reached) })
		<-open
	}
	g.flushCounter.hook(op) // counted once it goes through
}

func (g *flushGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed, g.open, g.reached, g.once = true, make(chan struct{}), make(chan struct{}), sync.Once{}
}

func (g *flushGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.closed = false
		close(g.open)
	}
}

// TestNoSyncWritesPassFlushBytes: with every device flush held, NoSync
// writes go on past NoSyncFlushBytes (the background flush they kicked is
// the one held: no writer waits for it) and stop only at twice
// NoSyncFlushBytes, the hard bound; once the flush is let go, they all
// complete, and every one of them is there.
func TestNoSyncWritesPassFlushBytes(t *testing.T) {
	const (
		flushBytes = 1 << 20
		valueSize  = 1000 // inline: each write adds its log record, about 1 KiB
		writes     = 4 * flushBytes / valueSize
	)
	g := &flushGate{}
	o := &heapkv.Options{NoSync: true, NoSyncFlushBytes: flushBytes, CheckpointLogBytes: -1}
	heapkv.SetFS(o, testfs.Wrap(vfs.NewMem(), g.hook))
	heapkv.SetMarkDelay(o, time.Hour) // no idle mark flush in the way
	db := openTestDB(t, "db", o)
	if err := db.Put([]byte("first"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil { // nothing unsynced
		t.Fatal(err)
	}
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, valueSize) }
	key := func(i int) []byte { return fmt.Appendf(nil, "k%06d", i) }

	g.close()
	before := g.now()
	var done atomic.Int64
	finished := make(chan error, 1)
	go func() {
		for i := range writes {
			if err := db.Put(key(i), value(i)); err != nil {
				finished <- err
				return
			}
			done.Add(1)
		}
		finished <- nil
	}()
	select {
	case <-g.reached:
	case err := <-finished:
		t.Fatalf("%d NoSync writes of %d bytes finished (%v) and no flush started: nothing kicked one", writes, valueSize, err)
	case <-time.After(time.Minute):
		t.Fatalf("no flush started within a minute; %d writes done", done.Load())
	}
	atHold := done.Load()
	// The writer goes on until the hard bound, then waits for the held
	// flush: wait until it stops (no progress for a second; the time
	// only detects the stop, the bounds below are in writes).
	stalled := int64(-1)
	for deadline, last, since := time.Now().Add(time.Minute), int64(-1), time.Now(); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		if n := done.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= time.Second {
			stalled = n
			break
		}
	}
	if stalled < 0 {
		t.Fatalf("the writer never stopped while every flush was held (%d of %d writes done)", done.Load(), writes)
	}
	if got := g.now().minus(before); got.log != 0 || got.heap != 0 {
		t.Fatalf("flushes completed while the gate was closed: %+v", got)
	}
	// About 1.06 KiB of unsynced bytes per write (record and key).
	lo, hi := int64(flushBytes*3/2/valueSize), int64(2*flushBytes/valueSize+1)
	t.Logf("first flush held after %d writes; writer stopped after %d writes (%d flushes held); bounds %d..%d",
		atHold, stalled, g.held.Load(), lo, hi)
	if stalled < lo {
		t.Errorf("the writer stopped after %d writes of %d bytes with NoSyncFlushBytes %d: it waited for the held flush before the hard bound",
			stalled, valueSize, flushBytes)
	}
	if stalled > hi {
		t.Errorf("the writer went on for %d writes of %d bytes with every flush held: unsynced bytes passed twice NoSyncFlushBytes (%d)",
			stalled, valueSize, 2*flushBytes)
	}
	g.release()
	if err := <-finished; err != nil {
		t.Fatal(err)
	}
	if got := g.now().minus(before); got.log == 0 {
		t.Errorf("no log flush after the gate opened: %+v", got)
	}
	for i := range writes {
		if v, err := db.Get(key(i)); err != nil || !bytes.Equal(v, value(i)) {
			t.Fatalf("Get(%s) = %d bytes, %v", key(i), len(v), err)
		}
	}
}
