package wal_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/wal"
)

// SyncTo flushes through its target and claims no more; it never calls
// BeforeSync or touches the mark; the stamps of the appends it covers
// become vouched for, also when the target is inside an append.
func TestSyncTo(t *testing.T) {
	fs, ops := countingFS(vfs.NewMem())
	opts, _ := testOptions(fs, 0)
	hooks := 0
	opts.BeforeSync = func() error { hooks++; return nil }
	l := writeLog(t, opts, 1, 5, false)
	if _, err := l.Append([][]byte{fixedPayload(6), fixedPayload(7), fixedPayload(8)}); err != nil {
		t.Fatal(err)
	}
	if err := l.SyncTo(9); err == nil || !strings.Contains(err.Error(), "past the last appended LSN 8") {
		t.Fatalf("SyncTo past the end: %v", err)
	}
	check := func(what string, synced, vouched, mark wal.LSN) {
		t.Helper()
		if l.SyncedLSN() != synced || l.VouchedLSN() != vouched || l.MarkLSN() != mark {
			t.Fatalf("%s: synced %d, vouched %d, mark %d; want %d, %d, %d",
				what, l.SyncedLSN(), l.VouchedLSN(), l.MarkLSN(), synced, vouched, mark)
		}
	}
	ops.take()
	if err := l.SyncTo(5); err != nil {
		t.Fatal(err)
	}
	check("SyncTo(5)", 5, 0, 0)
	if err := l.SyncTo(3); err != nil {
		t.Fatal(err)
	}
	if got := ops.take(); fmt.Sprint(got) != fmt.Sprint(map[string]int{"SyncData log": 1}) {
		t.Fatalf("SyncTo(5) then SyncTo(3): %v, want one flush", got)
	}
	if _, err := l.Append([][]byte{fixedPayload(9)}); err != nil { // stamped 5
		t.Fatal(err)
	}
	if err := l.SyncTo(9); err != nil {
		t.Fatal(err)
	}
	check("SyncTo(9)", 9, 5, 0)
	if _, err := l.Append([][]byte{fixedPayload(10), fixedPayload(11), fixedPayload(12)}); err != nil { // stamped 9
		t.Fatal(err)
	}
	if err := l.SyncTo(11); err != nil {
		t.Fatal(err)
	}
	check("SyncTo(11), inside an append", 11, 9, 0)
	if err := l.SyncTo(12); err != nil {
		t.Fatal(err)
	}
	check("SyncTo(12)", 12, 9, 0)
	if hooks != 0 {
		t.Fatalf("SyncTo called BeforeSync %d times", hooks)
	}
	if err := l.SyncMark(); err != nil {
		t.Fatal(err)
	}
	check("SyncMark", 12, 9, 12)
	if _, err := l.Append([][]byte{fixedPayload(13)}); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	check("Sync", 13, 12, 13)
	if hooks != 1 {
		t.Fatalf("Sync called BeforeSync %d times, want 1", hooks)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{"SyncTo": l.SyncTo(13), "SyncMark": l.SyncMark()} {
		if !errors.Is(err, wal.ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
	replayCheck(t, opts, 0, fixedModel(13))
}

// gateFS stops the first WriteAt or SyncData (whichever is armed) on a
// segment until released, to show what runs while it is stuck.
type gateFS struct {
	vfs.FS
	mu      sync.Mutex
	armed   string
	entered chan struct{}
	release chan struct{}
}

func (g *gateFS) arm(kind string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.entered, g.release = kind, make(chan struct{}), make(chan struct{})
}

func (g *gateFS) pass(kind string) {
	g.mu.Lock()
	if g.armed != kind {
		g.mu.Unlock()
		return
	}
	g.armed = ""
	entered, release := g.entered, g.release
	g.mu.Unlock()
	close(entered)
	<-release
}

func (g *gateFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := g.FS.OpenReadWrite(name, c, opts...)
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &gateFile{File: f, g: g}, nil
}

type gateFile struct {
	vfs.File
	g *gateFS
}

func (f *gateFile) WriteAt(p []byte, off int64) (int, error) {
	f.g.pass("WriteAt")
	return f.File.WriteAt(p, off)
}

func (f *gateFile) SyncData() error {
	f.g.pass("SyncData")
	return f.File.SyncData()
}

// within fails the test if f does not return within a few seconds.
func within(t *testing.T, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s waited for the other side's I/O", what)
	}
}

// The commit leader's Append and the syncer's SyncTo do not wait for each
// other's I/O: SyncTo completes while an Append is stuck in its write, and
// an Append completes while SyncTo is stuck in its flush.
func TestSyncToConcurrentWithAppend(t *testing.T) {
	g := &gateFS{FS: vfs.NewMem()}
	opts, _ := testOptions(g, 0)
	l := writeLog(t, opts, 1, 3, false)
	defer l.Close()

	g.arm("WriteAt")
	appended := make(chan error, 1)
	go func() { _, err := l.Append([][]byte{fixedPayload(4)}); appended <- err }()
	<-g.entered
	within(t, "SyncTo(3) during an Append's write", func() error { return l.SyncTo(3) })
	if l.SyncedLSN() != 3 {
		t.Fatalf("SyncedLSN %d, want 3", l.SyncedLSN())
	}
	close(g.release)
	if err := <-appended; err != nil {
		t.Fatal(err)
	}

	g.arm("SyncData")
	synced := make(chan error, 1)
	go func() { synced <- l.SyncTo(4) }()
	<-g.entered
	within(t, "Append during SyncTo's flush", func() error {
		_, err := l.Append([][]byte{fixedPayload(5)})
		return err
	})
	close(g.release)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if l.SyncedLSN() != 4 {
		t.Fatalf("SyncedLSN %d after SyncTo(4) that overlapped LSN 5's append, want 4", l.SyncedLSN())
	}
}

// copyFS returns a MemFS holding files (name -> contents) in dir.
func copyFS(t *testing.T, dir string, files map[string][]byte) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewMem()
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, b := range files {
		writeFile(t, fs, fs.PathJoin(dir, n), append([]byte(nil), b...))
	}
	return fs
}

// The window of the lazy mark, exactly: after SyncTo(10) the newest synced
// record has neither the mark nor a later durable record to vouch for it,
// so damage to it reads as a torn tail; damage to the one before is
// corruption (record 10 vouches for it). SyncMark closes the window, and
// so does the next group's flush (its record rides the mark along).
func TestLazyMarkWindow(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	l := writeLog(t, opts, 1, 0, false)
	for i := wal.LSN(1); i <= 10; i++ { // record i carries synced i-1
		if _, err := l.Append([][]byte{fixedPayload(i)}); err != nil {
			t.Fatal(err)
		}
		if err := l.SyncTo(i); err != nil {
			t.Fatal(err)
		}
	}
	seg1 := wal.SegmentName(1)
	damaged := func(lsn wal.LSN) wal.Options {
		o := opts
		o.FS = copyFS(t, opts.Dir, snapshot(t, opts.FS, opts.Dir))
		flipByte(t, o.FS, "db/wal/"+seg1, recOffset(int(lsn-1))+40)
		return o
	}
	o := damaged(10)
	if last, _, err := replayErr(o, 0); err != nil || last != 9 {
		t.Fatalf("damaged newest synced record, mark behind: %d, %v; want the window (a torn tail at 10)", last, err)
	}
	_, _, err := replayErr(damaged(9), 0)
	wantCorrupt(t, err, seg1, "LSN 9", "(LSN 10, synced 9)")

	// The next group's flush: record 11 vouches for 10.
	if _, err := l.Append([][]byte{fixedPayload(11)}); err != nil {
		t.Fatal(err)
	}
	if err := l.SyncTo(11); err != nil {
		t.Fatal(err)
	}
	_, _, err = replayErr(damaged(10), 0)
	wantCorrupt(t, err, seg1, "LSN 10", "(LSN 11, synced 10)")
	if last, _, err := replayErr(damaged(11), 0); err != nil || last != 10 {
		t.Fatalf("damaged record 11: %d, %v; want the window again", last, err)
	}
	// SyncMark: the newest synced record is protected too.
	if err := l.SyncMark(); err != nil {
		t.Fatal(err)
	}
	_, _, err = replayErr(damaged(11), 0)
	wantCorrupt(t, err, seg1, "LSN 11", wal.SyncMarkName, "durable through LSN 11")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
