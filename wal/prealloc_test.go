package wal_test

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/testfs"
	"github.com/heapkv/heapkv/wal"
)

// opLog counts the write-class operations of a testfs.FS by kind and by the
// kind of file: "log" (segments), "spare", "tmp" (spares being prepared),
// "mark" (the sync mark and its temporary file) or "dir".
type opLog struct {
	mu  sync.Mutex
	ops map[string]int
}

func fileKind(path string) string {
	switch {
	case strings.HasSuffix(path, ".log"):
		return "log"
	case strings.HasSuffix(path, ".spare"):
		return "spare"
	case strings.HasSuffix(path, ".spare.tmp"):
		return "tmp"
	case strings.Contains(path, wal.SyncMarkName):
		return "mark"
	}
	return "dir"
}

// countingFS returns fs wrapped so that every write-class operation is
// counted in the returned opLog.
func countingFS(fs vfs.FS) (*testfs.FS, *opLog) {
	c := &opLog{ops: map[string]int{}}
	return testfs.Wrap(fs, func(op testfs.Op) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.ops[op.Kind.String()+" "+fileKind(op.Path)]++
	}), c
}

// take returns the counts since the last take and resets them.
func (c *opLog) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.ops
	c.ops = map[string]int{}
	return m
}

func fileSize(t *testing.T, fs vfs.FS, path string) int64 {
	t.Helper()
	st, err := fs.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func readAll(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countFiles returns how many files in dir are segments and spares.
func countFiles(t *testing.T, fs vfs.FS, dir string) (segs, spares int) {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		switch fileKind(n) {
		case "log":
			segs++
		case "spare":
			spares++
		}
	}
	return segs, spares
}

// A segment file has its full size from the start; a synced group costs
// one fdatasync of it (SyncTo) and no full fsync; the spare for the next
// segment is prepared once the current one is half full, and the rotation
// only writes a header into it and renames it. An Append larger than a
// segment grows its segment, and only then is the flush a full fsync.
func TestPreallocatedSegments(t *testing.T) {
	const segSize = 16 << 10
	fs, ops := countingFS(vfs.NewMem())
	opts, logs := testOptions(fs, segSize)
	opts = wal.WithInlinePrepare(opts)
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileSize(t, fs, "db/wal/"+wal.SegmentName(1)); got != segSize {
		t.Fatalf("new segment has %d bytes, want %d", got, segSize)
	}
	if s := l.Stats(); s.SparesPrepared != 1 || s.Spares != 0 || s.Segments != 1 || s.Bytes != segSize {
		t.Fatalf("after Open: %+v", s)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	m := model{}
	ops.take()
	appendGroup(t, l, m, rng, 3, 200)
	if err := l.SyncTo(l.NextLSN() - 1); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(ops.take()), fmt.Sprint(map[string]int{"WriteAt log": 1, "SyncData log": 1}); got != want {
		t.Fatalf("a group synced with SyncTo: %s, want %s", got, want)
	}
	appendGroup(t, l, m, rng, 1, 200)
	ops.take()
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(ops.take()), fmt.Sprint(map[string]int{"SyncData log": 1, "WriteAt mark": 1, "SyncData mark": 1}); got != want {
		t.Fatalf("Sync: %s, want %s", got, want)
	}

	// Fill the segment past half: the Append that gets there prepares the
	// spare (zero-filled, fsynced, renamed into place).
	for l.Stats().Spares == 0 {
		appendGroup(t, l, m, rng, 1, 700)
		if err := l.SyncTo(l.NextLSN() - 1); err != nil {
			t.Fatal(err)
		}
		if l.Stats().Segments != 1 {
			t.Fatal("rotated before a spare was prepared")
		}
	}
	prep := ops.take()
	if prep["Create tmp"] != 1 || prep["Write tmp"] != segSize/(1<<20)+1 || prep["Sync tmp"] != 1 || prep["Rename spare"] != 1 {
		t.Fatalf("preparation: %v", prep)
	}
	// The rotation uses it: no file is created, nothing is zero-filled.
	for l.Stats().Segments == 1 {
		appendGroup(t, l, m, rng, 1, 700)
	}
	rot := ops.take()
	if rot["Create tmp"] != 0 || rot["Write tmp"] != 0 || rot["Sync log"] != 0 ||
		rot["WriteAt spare"] != 1 || rot["SyncData spare"] != 1 || rot["Rename log"] != 1 || rot["Sync dir"] != 1 {
		t.Fatalf("rotation: %v", rot)
	}
	if s := l.Stats(); s.SparesPrepared != 2 || s.Spares != 0 || s.Segments != 2 || s.Bytes != 2*segSize || s.FullSyncs != 0 {
		t.Fatalf("after the rotation: %+v", s)
	}

	// A record larger than a whole segment goes into a new segment and
	// grows it; its flush is a full fsync.
	big := randPayload(rng, l.NextLSN(), segSize+5000)
	for len(big) <= segSize {
		big = append(big, 'x')
	}
	first, err := l.Append([][]byte{big})
	if err != nil {
		t.Fatal(err)
	}
	m[first] = big
	bigSeg := "db/wal/" + wal.SegmentName(first)
	if got := fileSize(t, fs, bigSeg); got <= segSize {
		t.Fatalf("segment holding a %d-byte record has %d bytes", len(big), got)
	}
	ops.take()
	if err := l.SyncTo(first); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(ops.take()), fmt.Sprint(map[string]int{"Sync log": 1}); got != want {
		t.Fatalf("SyncTo of a grown segment: %s, want %s", got, want)
	}
	if s := l.Stats(); s.FullSyncs != 1 {
		t.Fatalf("FullSyncs %d, want 1", s.FullSyncs)
	}
	appendGroup(t, l, m, rng, 2, 100) // the grown segment is full: rotates
	if got := fileSize(t, fs, "db/wal/"+wal.SegmentName(first+1)); got != segSize {
		t.Fatalf("segment after the big one has %d bytes, want %d", got, segSize)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if last := replayCheck(t, opts, 0, m); last != first+2 {
		t.Fatalf("last %d, want %d", last, first+2)
	}
	if strings.Contains(logs.String(), "torn") {
		t.Fatalf("clean log replayed with a warning: %s", logs)
	}
}

// RemoveThrough keeps up to SpareSegments obsolete segments as spares;
// rotations reuse them (a header write and a rename, no zero-filling), so
// a log that checkpoints regularly prepares no new files at all;
// ReleaseSpares deletes them; Open adopts the spares a closed Log left and
// deletes the ones it cannot use.
func TestRecycledSegments(t *testing.T) {
	const segSize = 8 << 10
	fs, ops := countingFS(vfs.NewMem())
	opts, logs := testOptions(fs, segSize)
	opts = wal.WithInlinePrepare(opts)
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, 2))
	m := model{}
	for l.Stats().Segments < 6 {
		appendGroup(t, l, m, rng, 1, 1500)
		if err := l.SyncTo(l.NextLSN() - 1); err != nil {
			t.Fatal(err)
		}
	}
	before := l.Stats()
	if err := l.RemoveThrough(l.SyncedLSN()); err != nil {
		t.Fatal(err)
	}
	s := l.Stats()
	if s.Segments != 1 || s.Spares != wal.DefaultSpareSegments || s.SegmentsRecycled != uint64(wal.DefaultSpareSegments-before.Spares) {
		t.Fatalf("RemoveThrough: before %+v, after %+v", before, s)
	}
	if segs, spares := countFiles(t, fs, opts.Dir); segs != 1 || spares != wal.DefaultSpareSegments {
		t.Fatalf("%d segment files and %d spares on disk", segs, spares)
	}
	ckpt := l.SyncedLSN()

	// Steady state: every rotation takes a recycled spare, every
	// checkpoint recycles the segment before; nothing new is prepared.
	prepared := s.SparesPrepared
	for round := range 10 {
		segs := l.Stats().Segments
		ops.take()
		for l.Stats().Segments == segs {
			appendGroup(t, l, m, rng, 1, 1500)
		}
		rot := ops.take()
		if rot["Create tmp"] != 0 || rot["Write tmp"] != 0 || rot["Rename log"] != 1 {
			t.Fatalf("round %d: rotation into a recycled spare: %v", round, rot)
		}
		// The new segment's file holds the frames of an earlier use after
		// the header: it is not a zero-filled one.
		b := readAll(t, fs, "db/wal/"+wal.SegmentName(l.NextLSN()-1))
		if allZeroBytes(b[wal.SaltedSegmentHeaderSize+2000:]) {
			t.Fatalf("round %d: the new segment is zero-filled, not recycled", round)
		}
		if err := l.SyncTo(l.NextLSN() - 1); err != nil {
			t.Fatal(err)
		}
		ckpt = l.SyncedLSN() - 1
		if err := l.RemoveThrough(ckpt); err != nil {
			t.Fatal(err)
		}
		if s := l.Stats(); s.Spares > wal.DefaultSpareSegments || s.SparesPrepared != prepared {
			t.Fatalf("round %d: %+v", round, s)
		}
		if _, spares := countFiles(t, fs, opts.Dir); spares > wal.DefaultSpareSegments {
			t.Fatalf("round %d: %d spare files", round, spares)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	last := replayCheck(t, opts, ckpt, m)
	if strings.Contains(logs.String(), "torn") {
		t.Fatalf("recycled segments replayed with a warning: %s", logs)
	}

	// Open adopts the spares; a leftover of an interrupted preparation and
	// a spare of another size are deleted.
	writeFile(t, fs, "db/wal/"+wal.SpareName(900)+".tmp", make([]byte, 100))
	writeFile(t, fs, "db/wal/"+wal.SpareName(901), make([]byte, segSize/2))
	l, err = wal.Open(opts, last+1)
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.SparesPrepared != 0 || s.Spares != wal.DefaultSpareSegments-1 {
		t.Fatalf("Open with spares on disk: %+v", s)
	}
	for _, n := range []string{wal.SpareName(900) + ".tmp", wal.SpareName(901)} {
		if _, err := fs.Stat("db/wal/" + n); err == nil {
			t.Fatalf("Open left %s", n)
		}
	}
	appendGroup(t, l, m, rng, 2, 100)
	// A full disk: the spares give their space back; the next rotation
	// zero-fills a new one.
	spares := l.Stats().Spares
	if freed, err := l.ReleaseSpares(); err != nil || freed != int64(spares)*segSize || spares == 0 {
		t.Fatalf("ReleaseSpares: %d bytes, %v; %d spares", freed, err, spares)
	}
	if _, n := countFiles(t, fs, opts.Dir); n != 0 || l.Stats().Spares != 0 {
		t.Fatalf("%d spare files, %d in the pool after ReleaseSpares", n, l.Stats().Spares)
	}
	appendGroup(t, l, m, rng, 1, 100)
	if err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.SparesPrepared != 1 {
		t.Fatalf("rotation after ReleaseSpares: %+v", s)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ReleaseSpares(); !errors.Is(err, wal.ErrClosed) {
		t.Fatalf("ReleaseSpares after Close: %v", err)
	}
	replayCheck(t, opts, ckpt, m)

	// With SpareSegments < 0 every obsolete segment is deleted.
	o := opts
	o.Dir = "db/wal2"
	o.SpareSegments = -1
	l, err = wal.Open(o, 1)
	if err != nil {
		t.Fatal(err)
	}
	for l.Stats().Segments < 4 {
		appendGroup(t, l, model{}, rng, 1, 1500)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveThrough(l.SyncedLSN()); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.SegmentsRecycled != 0 || s.Spares > 1 || s.Segments != 1 {
		t.Fatalf("no recycling: %+v", s)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
