package wal_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/wal"
)

var errHeapMissing = errors.New("heap data missing")

// stopAt replays with a callback that refuses LSN x with ErrStop.
func stopAt(opts wal.Options, x wal.LSN) (wal.LSN, error) {
	return wal.Replay(opts, 0, func(lsn wal.LSN, p []byte) error {
		if lsn == x {
			return fmt.Errorf("%w: LSN %d: %w", wal.ErrStop, lsn, errHeapMissing)
		}
		return nil
	})
}

// A callback refusing a record not known durable ends the log there;
// Open(last+1) supersedes the rest, also in later recoveries.
func TestReplayErrStop(t *testing.T) {
	opts, logs := testOptions(vfs.NewMem(), 0)
	// No Sync between appends: no record vouches for another. The Log is
	// abandoned (a process crash): Close would sync and mark the records.
	writeLog(t, opts, 1, 10, false)
	last, err := stopAt(opts, 6)
	if err != nil || last != 5 {
		t.Fatalf("Replay with ErrStop at 6: %d, %v; want 5, nil", last, err)
	}
	if !strings.Contains(logs.String(), "replay stopped before LSN 6") {
		t.Fatalf("no warning: %q", logs)
	}
	m := fixedModel(5)
	rng := rand.New(rand.NewPCG(1, 1))
	// Refusing the first record of a segment: Open replaces that segment.
	writeLog(t, opts, 6, 2, false) // abandoned too
	if last, err := stopAt(opts, 6); err != nil || last != 5 {
		t.Fatalf("ErrStop at a segment's first record: %d, %v", last, err)
	}
	l, err := wal.Open(opts, 6)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		appendGroup(t, l, m, rng, 2, 50) // new records 6..11, other payloads
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if last := replayCheck(t, opts, 0, m); last != 11 {
		t.Fatalf("after the cut: last %d, want 11", last)
	}
}

func TestReplayErrStopOnDurableRecord(t *testing.T) {
	t.Run("vouched for by a later record", func(t *testing.T) {
		opts, _ := testOptions(vfs.NewMem(), 0)
		if err := writeLog(t, opts, 1, 10, true).Close(); err != nil {
			t.Fatal(err)
		}
		last, err := stopAt(opts, 6)
		wantCorrupt(t, err, wal.SegmentName(1), "LSN 6", "durable")
		if !errors.Is(err, errHeapMissing) || last != 5 {
			t.Fatalf("last %d, err %v: want 5 and the callback's cause", last, err)
		}
	})
	t.Run("vouched for by the sync mark", func(t *testing.T) {
		opts, _ := testOptions(vfs.NewMem(), 0)
		// Only the newest record was never followed by a later one; Close
		// synced it and recorded it in the sync mark.
		if err := writeLog(t, opts, 1, 10, false).Close(); err != nil {
			t.Fatal(err)
		}
		last, err := stopAt(opts, 10)
		wantCorrupt(t, err, wal.SegmentName(1), "LSN 10", "sync mark", wal.SyncMarkName, "durable through LSN 10")
		if !errors.Is(err, errHeapMissing) || last != 9 {
			t.Fatalf("last %d, err %v: want 9 and the callback's cause", last, err)
		}
	})
	t.Run("in a non-last segment", func(t *testing.T) {
		opts, _ := testOptions(vfs.NewMem(), 0)
		l := writeLog(t, opts, 1, 10, false)
		if err := l.Rotate(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := stopAt(opts, 10)
		wantCorrupt(t, err, wal.SegmentName(11))
	})
}

func TestProvenDurable(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	if p, err := wal.ProvenDurable(opts); err != nil || p != 0 {
		t.Fatalf("empty log: %d, %v", p, err)
	}
	l := writeLog(t, opts, 1, 5, true) // record k carries synced k-1
	for i := 6; i <= 8; i++ {          // unsynced
		if _, err := l.Append([][]byte{fixedPayload(wal.LSN(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := wal.ProvenDurable(opts); err != nil || p != 5 {
		t.Fatalf("ProvenDurable: %d, %v; want 5 (stamped in LSN 6..8)", p, err)
	}
	other := opts
	other.DBID[3]++
	if _, err := wal.ProvenDurable(other); !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("wrong DBID: %v", err)
	}
}

// SyncAll makes records that reached the file system durable, so that a
// process crash followed by a machine crash keeps them.
func TestSyncAll(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts, _ := testOptions(mem, wal.SaltedSegmentHeaderSize+4*recSize)
	writeLog(t, opts, 1, 10, false) // abandoned: a process crash
	if err := wal.SyncAll(opts); err != nil {
		t.Fatal(err)
	}
	opts.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	if last := replayCheck(t, opts, 0, fixedModel(10)); last != 10 {
		t.Fatalf("after SyncAll and a crash: last %d, want 10", last)
	}
	missing := opts
	missing.Dir = "nowhere"
	if err := wal.SyncAll(missing); err != nil {
		t.Fatalf("SyncAll of a missing directory: %v", err)
	}
}

// BeforeSync runs before every fsync that makes records durable, rotation
// included: a "heap" file written before each Append and synced by the hook
// holds the data of every record that survives a crash.
func TestBeforeSyncOrdersHeapFirst(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 99))
		mem := vfs.NewCrashableMem()
		opts, _ := testOptions(mem, 2000)
		calls := 0
		var heap vfs.File
		opts.BeforeSync = func() error { calls++; return heap.Sync() }
		l, err := wal.Open(opts, 1) // creates db/ durably
		if err != nil {
			t.Fatal(err)
		}
		if heap, err = mem.Create("db/heap", vfs.WriteCategoryUnspecified); err != nil {
			t.Fatal(err)
		}
		if d, err := mem.OpenDir("db"); err != nil || d.Sync() != nil {
			t.Fatal("cannot sync db/", err)
		}
		calls = 0
		m := model{}
		for range 60 {
			next := l.NextLSN()
			p := randPayload(rng, next, 300)
			if _, err := heap.Write(p); err != nil { // the data the record points at
				t.Fatal(err)
			}
			m[next] = p
			if _, err := l.Append([][]byte{p}); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(8) == 0 {
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
			}
		}
		crashed := mem.CrashClone(vfs.CrashCloneCfg{})
		f, err := crashed.Open("db/heap")
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		durableHeap := st.Size()
		f.Close()
		copts := opts
		copts.FS = crashed
		last := replayCheck(t, copts, 0, m)
		var need int64
		for lsn := wal.LSN(1); lsn <= last; lsn++ {
			need += int64(len(m[lsn]))
		}
		if need > durableHeap {
			t.Fatalf("seed %d: durable log holds %d records needing %d heap bytes, only %d durable", seed, last, need, durableHeap)
		}
		if calls == 0 {
			t.Fatal("BeforeSync never called")
		}
	}
}

func TestBeforeSyncError(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	boom := errors.New("heap sync failed")
	var fail bool
	calls := 0
	opts.BeforeSync = func() error {
		calls++
		if fail {
			return boom
		}
		return nil
	}
	l := writeLog(t, opts, 1, 3, false)
	if err := l.Sync(); err != nil || calls != 1 {
		t.Fatalf("Sync: %v, %d calls", err, calls)
	}
	if err := l.Sync(); err != nil || calls != 1 { // nothing to sync: no call
		t.Fatalf("idle Sync: %v, %d calls", err, calls)
	}
	if _, err := l.Append([][]byte{fixedPayload(4)}); err != nil {
		t.Fatal(err)
	}
	fail = true
	if err := l.Sync(); !errors.Is(err, boom) || l.SyncedLSN() != 3 {
		t.Fatalf("Sync with failing hook: %v, SyncedLSN %d", err, l.SyncedLSN())
	}
	fail = false // not poisoned: nothing was written
	if err := l.Sync(); err != nil || l.SyncedLSN() != 4 {
		t.Fatalf("Sync after the hook recovered: %v, SyncedLSN %d", err, l.SyncedLSN())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
