package wal_test

import (
	"bytes"
	"errors"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/wal"
)

func TestAppendReplayAcrossRotations(t *testing.T) {
	fs := vfs.NewMem()
	opts, _ := testOptions(fs, 2000)
	rng := rand.New(rand.NewPCG(1, 2))
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := model{}
	for range 200 {
		appendGroup(t, l, m, rng, 1+rng.IntN(4), 300)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if segs := segmentNames(t, fs, opts.Dir); len(segs) < 10 {
		t.Fatalf("only %d segments; rotation did not happen", len(segs))
	}
	if last := replayCheck(t, opts, 0, m); last != wal.LSN(len(m)) {
		t.Fatalf("last %d, want %d", last, len(m))
	}
	// Replay from the middle.
	if last := replayCheck(t, opts, 123, m); last != wal.LSN(len(m)) {
		t.Fatalf("last %d, want %d", last, len(m))
	}
	// Replay beyond the end: nothing, and last == after.
	if last := replayCheck(t, opts, wal.LSN(len(m)), m); last != wal.LSN(len(m)) {
		t.Fatalf("last %d, want %d", last, len(m))
	}
}

func TestReplayEmpty(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	for _, after := range []wal.LSN{0, 42} {
		last, err := wal.Replay(opts, after, func(wal.LSN, []byte) error { t.Fatal("record in empty log"); return nil })
		if err != nil || last != after {
			t.Fatalf("Replay(%d) of a missing dir: %d, %v", after, last, err)
		}
	}
	if _, err := wal.Replay(wal.Options{}, 0, nil); err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("Replay without Dir: %v", err)
	}
}

func TestRemoveThrough(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts, _ := testOptions(fs, 1000)
	rng := rand.New(rand.NewPCG(3, 4))
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m := model{}
	for range 100 {
		appendGroup(t, l, m, rng, 1, 200)
	}
	before := l.Stats()
	ckpt := wal.LSN(60)
	if err := l.RemoveThrough(ckpt); err != nil {
		t.Fatal(err)
	}
	after := l.Stats()
	if after.Segments >= before.Segments || after.Bytes >= before.Bytes {
		t.Fatalf("RemoveThrough removed nothing: %+v -> %+v", before, after)
	}
	segs := segmentNames(t, fs, opts.Dir)
	if len(segs) != after.Segments {
		t.Fatalf("%d segment files, Stats says %d", len(segs), after.Segments)
	}
	// The removal is durable: a crash does not bring the files back.
	if n := len(segmentNames(t, fs.CrashClone(vfs.CrashCloneCfg{}), opts.Dir)); n != after.Segments {
		t.Fatalf("%d segment files after a crash, want %d", n, after.Segments)
	}
	// The oldest remaining segment starts at or before ckpt+1: nothing above
	// the checkpoint is gone, and every removed segment was <= ckpt.
	if first := segs[0]; first > wal.SegmentName(ckpt+1) {
		t.Fatalf("oldest segment %s starts after %d", first, ckpt+1)
	}
	if len(segs) > 1 && segs[1] <= wal.SegmentName(ckpt+1) {
		t.Fatalf("segment %s should have been removed (next starts <= %d)", segs[0], ckpt+1)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	replayCheck(t, opts, ckpt, m)
	// The whole log is no longer there: Replay(0) reports missing LSNs.
	if _, err := wal.Replay(opts, 0, func(wal.LSN, []byte) error { return nil }); !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("Replay(0) after removal: %v, want ErrCorrupt", err)
	}
	// Removing everything keeps the current segment.
	if err := l.RemoveThrough(l.NextLSN()); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Segments != 1 {
		t.Fatalf("%d segments after removing all, want 1", s.Segments)
	}
	appendGroup(t, l, m, rng, 3, 100)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	replayCheck(t, opts, l.NextLSN()-4, m)
}

// Replay -> Open(last+1) -> append -> Close, many times, with rotations.
func TestReopenLoop(t *testing.T) {
	fs := vfs.NewMem()
	opts, _ := testOptions(fs, 1500)
	rng := rand.New(rand.NewPCG(5, 6))
	m := model{}
	last := wal.InvalidLSN
	for i := range 50 {
		got := replayCheck(t, opts, 0, m)
		if got != last {
			t.Fatalf("iteration %d: Replay last %d, want %d", i, got, last)
		}
		l, err := wal.Open(opts, last+1)
		if err != nil {
			t.Fatal(err)
		}
		for range rng.IntN(6) {
			appendGroup(t, l, m, rng, 1+rng.IntN(3), 400)
		}
		last = l.NextLSN() - 1
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(m) == 0 || replayCheck(t, opts, 0, m) != wal.LSN(len(m)) {
		t.Fatalf("final replay does not hold all %d records", len(m))
	}
}

func TestReplayDoesNotModify(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts, _ := testOptions(fs, 1000)
	rng := rand.New(rand.NewPCG(7, 8))
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := model{}
	for range 40 {
		appendGroup(t, l, m, rng, 2, 100)
	}
	// Crash with some unsynced data, so Replay meets a torn tail.
	clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng})
	opts.FS = clone
	before := snapshot(t, clone, opts.Dir)
	replayCheck(t, opts, 0, m)
	replayCheck(t, opts, 17, m)
	if after := snapshot(t, clone, opts.Dir); !maps.EqualFunc(before, after, bytes.Equal) {
		t.Fatal("Replay modified the directory")
	}
}

func TestLogAPI(t *testing.T) {
	fs := vfs.NewMem()
	opts, _ := testOptions(fs, 0)
	if _, err := wal.Open(opts, 0); err == nil {
		t.Fatal("Open(0) succeeded")
	}
	bad := opts
	bad.SegmentSize = -1
	if _, err := wal.Open(bad, 1); err == nil {
		t.Fatal("negative SegmentSize accepted")
	}
	l, err := wal.Open(opts, 10)
	if err != nil {
		t.Fatal(err)
	}
	if l.NextLSN() != 10 || l.SyncedLSN() != 9 {
		t.Fatalf("NextLSN %d SyncedLSN %d, want 10, 9", l.NextLSN(), l.SyncedLSN())
	}
	if first, err := l.Append(nil); err != nil || first != 10 {
		t.Fatalf("empty Append: %d, %v", first, err)
	}
	if _, err := l.Append([][]byte{make([]byte, wal.MaxPayloadSize+1)}); !errors.Is(err, wal.ErrRecordTooLarge) {
		t.Fatalf("oversized Append: %v", err)
	}
	if first, err := l.Append([][]byte{[]byte("a"), []byte("b")}); err != nil || first != 10 {
		t.Fatalf("Append: %d, %v", first, err)
	}
	if l.SyncedLSN() != 9 {
		t.Fatalf("SyncedLSN %d before Sync", l.SyncedLSN())
	}
	for range 3 { // the second and third Sync have nothing to do
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	s := l.Stats()
	if l.SyncedLSN() != 11 || s.Syncs != 1 || s.Appends != 1 || s.Records != 2 || s.Segments != 1 {
		t.Fatalf("SyncedLSN %d, stats %+v", l.SyncedLSN(), s)
	}
	if err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := l.Rotate(); err != nil { // empty current segment: no-op
		t.Fatal(err)
	}
	if s := l.Stats(); s.Segments != 2 {
		t.Fatalf("%d segments after Rotate, want 2", s.Segments)
	}
	// A later Open may not start before existing segments.
	if _, err := wal.Open(opts, 5); err == nil {
		t.Fatal("Open before existing segments succeeded")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Append": func() error { _, err := l.Append([][]byte{nil}); return err }(),
		"Sync":   l.Sync(), "Rotate": l.Rotate(), "RemoveThrough": l.RemoveThrough(1), "Close": l.Close(),
	} {
		if !errors.Is(err, wal.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if wal.LSN(12).String() != "12" || wal.SegmentName(12) != "00000000000000000012.log" {
		t.Fatal("LSN/segment name formatting")
	}
}

// Sync from several goroutines while one goroutine appends; crash clones
// taken meanwhile hold everything SyncedLSN reported before the clone.
func TestConcurrentSyncAppend(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts, _ := testOptions(fs, 16<<10)
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		m    = model{}
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() { // the commit leader
		defer wg.Done()
		defer close(done)
		rng := rand.New(rand.NewPCG(9, 10))
		for range 2000 {
			// Payloads enter the model before they are written, so a
			// snapshot of m taken after a crash clone covers the clone.
			next := l.NextLSN()
			ps := make([][]byte, 1+rng.IntN(3))
			mu.Lock()
			for i := range ps {
				ps[i] = randPayload(rng, next+wal.LSN(i), 200)
				m[next+wal.LSN(i)] = ps[i]
			}
			mu.Unlock()
			if _, err := l.Append(ps); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := wal.InvalidLSN
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := l.Sync(); err != nil {
					t.Error(err)
					return
				}
				if s := l.SyncedLSN(); s < prev {
					t.Errorf("SyncedLSN went back from %d to %d", prev, s)
				} else {
					prev = s
				}
				_ = l.Stats()
			}
		}()
	}
	for i := 0; ; i++ {
		select {
		case <-done:
		default:
			synced := l.SyncedLSN()
			clone := fs.CrashClone(vfs.CrashCloneCfg{})
			copts := opts
			copts.FS = clone
			mu.Lock()
			snap := maps.Clone(m)
			mu.Unlock()
			if last := replayCheck(t, copts, 0, snap); last < synced {
				t.Fatalf("crash clone %d holds through %d, but SyncedLSN was %d", i, last, synced)
			}
			continue
		}
		break
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if last := replayCheck(t, opts, 0, m); last != wal.LSN(len(m)) {
		t.Fatalf("last %d, want %d", last, len(m))
	}
}
