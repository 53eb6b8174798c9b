package wal_test

import (
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/heapkv/heapkv/wal"
)

// RotateIfSpare rotates only into a spare that is ready: with an empty pool
// it touches no file and keeps appending to the current segment; a
// RemoveThrough at an LSN inside that segment keeps it, and Replay from
// that LSN returns exactly the later records. Once RemoveThrough has
// recycled segments, RotateIfSpare rotates without preparing a file.
func TestRotateIfSpare(t *testing.T) {
	const segSize = 8 << 10
	fs, ops := countingFS(vfs.NewMem())
	opts, _ := testOptions(fs, segSize)
	opts = wal.WithInlinePrepare(opts)
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	m := model{}
	appendGroup(t, l, m, rng, 2, 500)
	if s := l.Stats(); s.Spares != 0 {
		t.Fatalf("a new log has %d spares ready; the test needs none", s.Spares)
	}
	ops.take()
	rotated, err := l.RotateIfSpare()
	if err != nil || rotated {
		t.Fatalf("RotateIfSpare with no spare: rotated %v, err %v", rotated, err)
	}
	if got := ops.take(); len(got) != 0 {
		t.Fatalf("RotateIfSpare with no spare touched files: %v", got)
	}
	// The "checkpoint" at mid: records after it stay in the same segment.
	mid := l.NextLSN() - 1
	appendGroup(t, l, m, rng, 2, 500)
	if err := l.SyncTo(l.NextLSN() - 1); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveThrough(mid); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Segments != 1 {
		t.Fatalf("RemoveThrough(%d) inside the only segment: %+v", mid, s)
	}
	replayCheck(t, opts, mid, m)

	// Fill segments, sync, recycle them: now a spare is ready.
	for l.Stats().Segments < 4 {
		appendGroup(t, l, m, rng, 1, 1500)
	}
	if err := l.SyncTo(l.NextLSN() - 1); err != nil {
		t.Fatal(err)
	}
	ckpt := l.SyncedLSN()
	if err := l.RemoveThrough(ckpt); err != nil {
		t.Fatal(err)
	}
	s := l.Stats()
	if s.Spares == 0 {
		t.Fatalf("RemoveThrough recycled nothing: %+v", s)
	}
	appendGroup(t, l, m, rng, 1, 500)
	ops.take()
	rotated, err = l.RotateIfSpare()
	if err != nil || !rotated {
		t.Fatalf("RotateIfSpare with %d spares: rotated %v, err %v", s.Spares, rotated, err)
	}
	got := ops.take()
	if got["Create tmp"] != 0 || got["Write tmp"] != 0 || got["Rename log"] != 1 {
		t.Fatalf("rotation into a recycled spare: %v", got)
	}
	if a := l.Stats(); a.Segments != s.Segments+1 || a.Spares != s.Spares-1 {
		t.Fatalf("after RotateIfSpare: %+v, before %+v", a, s)
	}
	appendGroup(t, l, m, rng, 2, 500)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	replayCheck(t, opts, ckpt, m)
}
