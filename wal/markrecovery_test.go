package wal_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv/internal/testfs"
	"github.com/heapkv/heapkv/wal"
)

// A log that ends before the sync mark is corruption, whichever way its
// end went missing; ending at the mark, or (for Replay(after)) holding no
// segment at all with the mark at or below after, is not.
func TestSyncMarkLogEndsEarly(t *testing.T) {
	// Segments of 4 records: 1..4, 5..8, 9..10 (all synced and marked).
	newLog := func(t *testing.T) wal.Options {
		opts, _ := testOptions(vfs.NewMem(), wal.SaltedSegmentHeaderSize+4*recSize)
		if err := writeLog(t, opts, 1, 10, true).Close(); err != nil {
			t.Fatal(err)
		}
		return opts
	}
	seg9 := "db/wal/" + wal.SegmentName(9)
	t.Run("newest segment deleted", func(t *testing.T) {
		opts := newLog(t)
		if err := opts.FS.Remove(seg9); err != nil {
			t.Fatal(err)
		}
		last, _, err := replayErr(opts, 0)
		wantCorrupt(t, err, wal.SegmentName(5), "log ends at LSN 8", "LSNs 9..10 are missing", wal.SyncMarkName)
		if last != 8 {
			t.Fatalf("last %d, want 8", last)
		}
	})
	t.Run("newest segment emptied", func(t *testing.T) {
		opts := newLog(t)
		writeFile(t, opts.FS, seg9, nil)
		_, _, err := replayErr(opts, 0)
		wantCorrupt(t, err, seg9, "LSNs 9..10 are missing", "durable through LSN 10")
	})
	t.Run("newest segment cut after its first record", func(t *testing.T) {
		opts := newLog(t)
		b := snapshot(t, opts.FS, opts.Dir)[wal.SegmentName(9)]
		writeFile(t, opts.FS, seg9, b[:recOffset(1)])
		last, _, err := replayErr(opts, 0)
		wantCorrupt(t, err, seg9, "log ends at LSN 9", "LSNs 10..10 are missing")
		if last != 9 {
			t.Fatalf("last %d, want 9", last)
		}
	})
	t.Run("no segment left", func(t *testing.T) {
		opts := newLog(t)
		for _, n := range segmentNames(t, opts.FS, opts.Dir) {
			if err := opts.FS.Remove("db/wal/" + n); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err := replayErr(opts, 4)
		wantCorrupt(t, err, "no log segment", "LSNs 5..10 are missing")
		// After a checkpoint at or past the mark nothing is missing.
		if last, _, err := replayErr(opts, 10); err != nil || last != 10 {
			t.Fatalf("Replay(10): %d, %v; want 10, nil", last, err)
		}
	})
	t.Run("ends at the mark", func(t *testing.T) {
		opts := newLog(t)
		if last, _, err := replayErr(opts, 0); err != nil || last != 10 {
			t.Fatalf("%d, %v; want 10, nil", last, err)
		}
	})
}

// A checkpoint deletes the segment holding the marked LSN: the log after
// it is empty (one new segment) or starts after it, and Replay(after)
// accepts that, also after a crash.
func TestSyncMarkAfterRemoveThrough(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts, _ := testOptions(mem, 0)
	l := writeLog(t, opts, 1, 10, true)
	if err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveThrough(10); err != nil {
		t.Fatal(err)
	}
	if segs := segmentNames(t, mem, opts.Dir); len(segs) != 1 || segs[0] != wal.SegmentName(11) {
		t.Fatalf("segments %v, want only the new one", segs)
	}
	o := opts
	o.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	if last, _, err := replayErr(o, 10); err != nil || last != 10 {
		t.Fatalf("empty log after the checkpoint: %d, %v; want 10, nil", last, err)
	}
	if p, err := wal.ProvenDurable(o); err != nil || p != 10 {
		t.Fatalf("ProvenDurable: %d, %v; want 10 (the mark)", p, err)
	}
	for i := 11; i <= 14; i++ {
		if _, err := l.Append([][]byte{fixedPayload(wal.LSN(i))}); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	o.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	if last, _, err := replayErr(o, 10); err != nil || last != 14 {
		t.Fatalf("after more records: %d, %v; want 14, nil", last, err)
	}
	// Recover on the clone and go on: Open(15) keeps the mark at 14.
	l2 := writeLog(t, o, 15, 2, true)
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	if last, _, err := replayErr(o, 10); err != nil || last != 16 {
		t.Fatalf("after recovery: %d, %v; want 16, nil", last, err)
	}
}

// Open refuses to start below the mark (it would cut off durable records)
// and changes nothing when it does.
func TestSyncMarkOpenBelowMark(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	if err := writeLog(t, opts, 1, 10, false).Close(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, opts.FS, opts.Dir)
	if _, err := wal.Open(opts, 8); err == nil || !strings.Contains(err.Error(), "through 10 are durable") {
		t.Fatalf("Open(8) below the mark: %v", err)
	}
	after := snapshot(t, opts.FS, opts.Dir)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatal("a refused Open changed the directory")
	}
}

// A log of an older version has no sync mark file: its rules are today's
// (a damaged newest record is a torn tail), Open creates the file, and from
// then on the mark protects the newest synced records.
func TestSyncMarkMissingFile(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	old := wal.WithoutSyncMark(opts)
	if err := writeLog(t, old, 1, 10, true).Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := snapshot(t, opts.FS, opts.Dir)[wal.SyncMarkName]; ok {
		t.Fatal("the sync mark was turned off, but the file exists")
	}
	if p, err := wal.ProvenDurable(opts); err != nil || p != 9 {
		t.Fatalf("ProvenDurable without a mark: %d, %v; want 9 (stamped in LSN 10)", p, err)
	}
	seg1 := "db/wal/" + wal.SegmentName(1)
	flipByte(t, opts.FS, seg1, recOffset(9)+30)
	if last, _, err := replayErr(opts, 0); err != nil || last != 9 {
		t.Fatalf("without a mark: %d, %v; want a torn tail at 9", last, err)
	}
	l := writeLog(t, opts, 10, 3, true) // recovery: Open creates the file
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if p, err := wal.ProvenDurable(opts); err != nil || p != 12 {
		t.Fatalf("ProvenDurable with the mark: %d, %v; want 12", p, err)
	}
	flipByte(t, opts.FS, "db/wal/"+wal.SegmentName(10), recOffset(2)+30)
	_, _, err := replayErr(opts, 0)
	wantCorrupt(t, err, wal.SegmentName(10), "sync mark", "durable through LSN 12")
}

// A sync mark damaged in both slots is corruption for Replay, ProvenDurable
// and Open; one damaged slot falls back to the other, one sync older.
func TestSyncMarkDamagedFile(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	if err := writeLog(t, opts, 1, 10, true).Close(); err != nil {
		t.Fatal(err)
	}
	// Seq 11 (LSN 10) is in slot 1, seq 10 (LSN 9) in slot 0.
	patchFile(t, opts.FS, markPath, wal.MarkOffSlot1+20, []byte{0xff})
	if p, err := wal.ProvenDurable(opts); err != nil || p != 9 {
		t.Fatalf("ProvenDurable with slot 1 torn: %d, %v; want 9 (slot 0)", p, err)
	}
	if last, _, err := replayErr(opts, 0); err != nil || last != 10 {
		t.Fatalf("Replay with slot 1 torn: %d, %v; want 10, nil", last, err)
	}
	patchFile(t, opts.FS, markPath, wal.MarkOffSlot0+20, []byte{0xff})
	_, _, err := replayErr(opts, 0)
	wantCorrupt(t, err, markPath, "both slots")
	_, err = wal.ProvenDurable(opts)
	wantCorrupt(t, err, markPath, "both slots")
	_, err = wal.Open(opts, 11)
	wantCorrupt(t, err, markPath, "both slots")
}

// markInjector fails the chosen operation kinds on the sync mark file.
func markInjector(kinds ...errorfs.OpKind) *errorfs.Toggle {
	return &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		for _, k := range kinds {
			if op.Kind == k && strings.Contains(op.Path, wal.SyncMarkName) { // .tmp too
				return errorfs.ErrInjected
			}
		}
		return nil
	})}
}

// A failed mark update poisons the Log like a failed fsync: its durability
// is unknown. A crash afterwards still recovers every acknowledged record
// without corruption.
func TestSyncMarkWriteFailurePoisons(t *testing.T) {
	for name, op := range map[string]errorfs.OpKind{"write": errorfs.OpFileWriteAt, "sync": errorfs.OpFileSyncData} {
		for _, pct := range []int{0, 100} {
			t.Run(fmt.Sprintf("%s/keep%d%%", name, pct), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(op), uint64(pct)))
				mem := vfs.NewCrashableMem()
				tog := markInjector(op)
				opts, _ := testOptions(errorfs.Wrap(mem, tog), 0)
				l, err := wal.Open(opts, 1)
				if err != nil {
					t.Fatal(err)
				}
				m := model{}
				appendGroup(t, l, m, rng, 5, 300)
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				last := appendGroup(t, l, m, rng, 3, 300) + 2
				tog.On()
				if err := l.Sync(); !errors.Is(err, errorfs.ErrInjected) || !strings.Contains(err.Error(), wal.SyncMarkName) {
					t.Fatalf("Sync with a failing mark update: %v", err)
				}
				tog.Off()
				// The segment flush before the mark update succeeded: the
				// records are durable, and SyncedLSN says so.
				if got := l.SyncedLSN(); got != last {
					t.Fatalf("SyncedLSN %d after the segment flush, want %d", got, last)
				}
				checkPoisoned(t, l, rng, errorfs.ErrInjected, last)
				opts.FS = mem
				crashReplay(t, mem, opts, m, rng, pct, last, false)
			})
		}
	}
	t.Run("in Open", func(t *testing.T) {
		mem := vfs.NewCrashableMem()
		tog := markInjector(errorfs.OpCreate)
		opts, _ := testOptions(errorfs.Wrap(mem, tog), 0)
		tog.On()
		if _, err := wal.Open(opts, 1); !errors.Is(err, errorfs.ErrInjected) {
			t.Fatalf("Open with a failing mark create: %v", err)
		}
		tog.Off()
		// What the failed Open left (an empty segment, no mark) is an empty
		// log, also after a crash, and a new Open works.
		o := opts
		o.FS = mem.CrashClone(vfs.CrashCloneCfg{})
		if last := replayCheck(t, o, 0, model{}); last != 0 {
			t.Fatalf("after a failed Open: last %d", last)
		}
		l, err := wal.Open(opts, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// A synced group costs one fdatasync of the segment with SyncTo, and two
// with Sync (the segment's and the mark's); the mark catches up in
// SyncMark, which costs nothing when it is up to date; nothing costs
// anything when there is nothing new to sync.
func TestSyncMarkCost(t *testing.T) {
	type count struct{ segSync, markSync, markWrite, other int }
	var c count
	fs := testfs.Wrap(vfs.NewMem(), func(op testfs.Op) {
		isMark := strings.HasSuffix(op.Path, wal.SyncMarkName)
		switch {
		case op.Kind == testfs.SyncData && strings.HasSuffix(op.Path, ".log"):
			c.segSync++
		case op.Kind == testfs.SyncData && isMark:
			c.markSync++
		case op.Kind == testfs.WriteAt && isMark:
			c.markWrite++
		case op.Kind != testfs.WriteAt:
			c.other++ // a full Sync of the segment among them
		}
	})
	opts, _ := testOptions(fs, 0)
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	step := func(what string, f func() error, want count) {
		t.Helper()
		c = count{}
		if err := f(); err != nil {
			t.Fatal(err)
		}
		if c != want {
			t.Fatalf("%s: %+v, want %+v", what, c, want)
		}
	}
	for i := 1; i <= 20; i++ {
		if _, err := l.Append([][]byte{fixedPayload(wal.LSN(i))}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			step("Sync", l.Sync, count{segSync: 1, markSync: 1, markWrite: 1})
		} else {
			step("SyncTo", func() error { return l.SyncTo(wal.LSN(i)) }, count{segSync: 1})
			if l.MarkLSN() != wal.LSN(i-1) || l.SyncedLSN() != wal.LSN(i) {
				t.Fatalf("after SyncTo(%d): mark %d, synced %d", i, l.MarkLSN(), l.SyncedLSN())
			}
			if i%4 == 1 {
				step("SyncMark", l.SyncMark, count{markSync: 1, markWrite: 1})
			}
		}
		if i%4 == 3 {
			// Nothing new to flush, but the mark lags behind SyncTo.
			step("Sync after SyncTo", l.Sync, count{markSync: 1, markWrite: 1})
		}
		step("Sync with nothing new", l.Sync, count{})
		step("SyncTo with nothing new", func() error { return l.SyncTo(wal.LSN(i)) }, count{})
		step("SyncMark with nothing new", l.SyncMark, count{})
	}
	// 10 Syncs and 10 SyncTos flushed the segment; the mark was written by
	// the 10 Syncs that flushed, 5 SyncMarks and 5 Syncs that only caught
	// up.
	if s := l.Stats(); s.Syncs != 20 || s.FullSyncs != 0 || s.MarkSyncs != 20 {
		t.Fatalf("Stats: %d syncs (%d full), %d mark syncs; want 20 (0 full) and 20", s.Syncs, s.FullSyncs, s.MarkSyncs)
	}
}
