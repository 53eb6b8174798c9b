package wal_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/testfs"
	"github.com/heapkv/heapkv/wal"
)

// TestReopenRecyclesEmptySegment: a log opened and closed without records
// is opened again in its own segment file, recycled as a spare, so that
// opening and closing a database that is not written zero-fills nothing.
func TestReopenRecyclesEmptySegment(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	for round := range 3 {
		last := replayCheck(t, opts, 0, model{})
		l, err := wal.Open(opts, last+1)
		if err != nil {
			t.Fatal(err)
		}
		st := l.Stats()
		if round > 0 && (st.SparesPrepared != 0 || st.SegmentsRecycled != 1) {
			t.Fatalf("reopen %d: %d spares prepared, %d segments recycled; want 0 and 1", round, st.SparesPrepared, st.SegmentsRecycled)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if names := segmentNames(t, opts.FS, opts.Dir); fmt.Sprint(names) != "["+wal.SegmentName(1)+"]" {
			t.Fatalf("reopen %d: the log directory holds %v", round, names)
		}
	}
}

// TestReopenRecycleCrash crashes a reopen of an empty log at each of its
// file operations: every crash state replays as the empty log, opens again,
// and keeps what is appended then.
func TestReopenRecycleCrash(t *testing.T) {
	for k := int64(1); ; k++ {
		mem := vfs.NewCrashableMem()
		var clone *vfs.MemFS
		var armed bool
		var start int64
		fs := testfs.Wrap(mem, func(op testfs.Op) {
			if armed && clone == nil && op.N == start+k {
				clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(k), 2))})
			}
		})
		opts, _ := testOptions(fs, 0)
		opts.Logger = quietLogger()
		l, err := wal.Open(opts, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		start, armed = fs.Ops(), true
		if l, err = wal.Open(opts, 1); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if clone == nil {
			if k < 3 {
				t.Fatalf("the reopen made only %d write-class operations", k-1)
			}
			return // k passed the reopen's last operation
		}
		copts, _ := testOptions(clone, 0)
		copts.Logger = quietLogger()
		last := replayCheck(t, copts, 0, model{})
		if last != 0 {
			t.Fatalf("crash at op %d of the reopen: replayed through LSN %d, want an empty log", k, last)
		}
		l, err = wal.Open(copts, 1)
		if err != nil {
			t.Fatalf("crash at op %d of the reopen: Open: %v", k, err)
		}
		m := model{}
		appendGroup(t, l, m, rand.New(rand.NewPCG(uint64(k), 1)), 3, 100)
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		replayCheck(t, copts, 0, m)
	}
}
