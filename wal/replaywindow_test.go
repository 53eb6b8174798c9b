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

// writeWideLog writes records of 1.5 MiB between small ones into one 4 MiB
// segment, so records, their damage and the evidence after it lie in
// different windows of Replay's reads (1 MiB). Every record is synced
// before the next is written, and the sync mark is off: what proves a
// record durable is the synced stamp of the records after it.
func writeWideLog(t *testing.T) (wal.Options, *logBuf, model, []int64) {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{7})
	opts, lb := testOptions(vfs.NewMem(), 4<<20)
	opts = wal.WithoutSyncMark(opts)
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := model{}
	var offs []int64 // offs[i]: where LSN i+1 starts in the segment
	off := int64(wal.SaltedSegmentHeaderSize)
	for i := range 5 {
		lsn := l.NextLSN()
		n := 100
		if i%2 == 1 {
			n = 3 << 19
		}
		p := fmt.Appendf(make([]byte, 0, 32+n), "lsn=%d;", lsn)
		p = p[:len(p)+n]
		rng.Read(p[len(p)-n:])
		if _, err := l.Append([][]byte{p}); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		m[lsn] = p
		offs = append(offs, off)
		off += int64(wal.SaltedRecordHeaderSize + len(p))
	}
	return opts, lb, m, offs
}

// TestReplayAcrossWindows replays records larger than a read window, and
// tells a torn tail from damage whose evidence lies windows away.
func TestReplayAcrossWindows(t *testing.T) {
	opts, _, m, _ := writeWideLog(t)
	if last := replayCheck(t, opts, 0, m); last != 5 {
		t.Fatalf("replayed through LSN %d, want 5", last)
	}

	// Damage in the payload of LSN 4 (1.5 MiB): LSN 5 after it carries
	// synced stamp 4, more than a window away, so this is corruption.
	opts, _, _, offs := writeWideLog(t)
	seg := opts.FS.PathJoin(opts.Dir, wal.SegmentName(1))
	patchFile(t, opts.FS, seg, offs[3]+int64(wal.SaltedRecordHeaderSize)+(1<<20), []byte{0xff, 0xee})
	_, err := wal.Replay(opts, 0, func(wal.LSN, []byte) error { return nil })
	if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), "shows it was durable") {
		t.Fatalf("damaged LSN 4 with LSN 5 after it: %v, want corruption proven by LSN 5", err)
	}

	// The same damage in LSN 5, the last record, is a torn tail: the log
	// ends at LSN 4 with a warning.
	opts, lb, m, offs := writeWideLog(t)
	delete(m, 5)
	patchFile(t, opts.FS, seg, offs[4]+int64(wal.SaltedRecordHeaderSize)+50, []byte{0xff, 0xee})
	if last := replayCheck(t, opts, 0, m); last != 4 {
		t.Fatalf("damaged last record: replayed through LSN %d, want 4", last)
	}
	if !strings.Contains(lb.String(), "torn tail truncated at LSN 5") {
		t.Fatalf("no torn-tail warning for LSN 5; log: %s", lb.String())
	}
	p, err := wal.ProvenDurable(opts)
	if err != nil || p != 3 {
		t.Fatalf("ProvenDurable = %d, %v; want 3, the stamp of LSN 4 (LSN 5 is damaged)", p, err)
	}
}
