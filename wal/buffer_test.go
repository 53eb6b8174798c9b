package wal_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv/internal/testfs"
	"github.com/heapkv/heapkv/wal"
)

// Buffered appends (AppendBuffered): records framed into the Log's buffer
// and written by a later Append, WriteBuffered, a flush, a rotation or
// Close.

// appendBuffered is appendGroup through AppendBuffered.
func appendBuffered(t testing.TB, l *wal.Log, m model, rng *rand.Rand, n, maxLen int) wal.LSN {
	t.Helper()
	next := l.NextLSN()
	ps := make([][]byte, n)
	for i := range ps {
		ps[i] = randPayload(rng, next+wal.LSN(i), maxLen)
	}
	first, err := l.AppendBuffered(ps)
	if err != nil {
		t.Fatalf("AppendBuffered: %v", err)
	}
	if first != next {
		t.Fatalf("AppendBuffered returned first LSN %d, want %d", first, next)
	}
	for i, p := range ps {
		m[first+wal.LSN(i)] = p
	}
	return first
}

// writeCounter counts WriteAt calls on segment files.
type writeCounter struct{ n atomic.Int64 }

func (c *writeCounter) hook(op testfs.Op) {
	if op.Kind == testfs.WriteAt && len(op.Path) > 4 && op.Path[len(op.Path)-4:] == ".log" {
		c.n.Add(1)
	}
}

// TestBufferedAppend: buffered records are not written until the buffer
// reaches BufferSize, an Append takes them along in its one write, and
// they replay after WriteBuffered and Sync.
func TestBufferedAppend(t *testing.T) {
	mem := vfs.NewCrashableMem()
	wc := &writeCounter{}
	opts, _ := testOptions(testfs.Wrap(mem, wc.hook), 1<<20)
	opts.BufferSize = 4 << 10
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	m := model{}
	w0 := wc.n.Load()
	for range 3 {
		appendBuffered(t, l, m, rng, 1, 100) // at most 3 x 140 bytes: below BufferSize
	}
	if got := wc.n.Load() - w0; got != 0 || l.WrittenLSN() != 0 || l.NextLSN() != 4 {
		t.Fatalf("3 small buffered appends: %d writes, WrittenLSN %d, NextLSN %d; want 0, 0, 4", got, l.WrittenLSN(), l.NextLSN())
	}
	appendGroup(t, l, m, rng, 2, 100)
	if got := wc.n.Load() - w0; got != 1 || l.WrittenLSN() != 5 {
		t.Fatalf("Append behind 3 buffered records: %d writes, WrittenLSN %d; want 1 write through 5", got, l.WrittenLSN())
	}
	// The buffer is written once it reaches BufferSize: 1,000-byte
	// records, so the fifth is the one.
	w1 := wc.n.Load()
	for i := range 5 {
		next := l.NextLSN()
		p := append(fmt.Appendf(nil, "lsn=%d;", next), make([]byte, 900)...)
		if _, err := l.AppendBuffered([][]byte{p}); err != nil {
			t.Fatal(err)
		}
		m[next] = p
		want := int64(0)
		if i == 4 {
			want = 1
		}
		if got := wc.n.Load() - w1; got != want {
			t.Fatalf("after %d buffered 900-byte records: %d writes, want %d", i+1, got, want)
		}
	}
	appendBuffered(t, l, m, rng, 2, 100)
	if err := l.WriteBuffered(); err != nil {
		t.Fatal(err)
	}
	if l.WrittenLSN() != l.NextLSN()-1 {
		t.Fatalf("WriteBuffered left WrittenLSN at %d, NextLSN %d", l.WrittenLSN(), l.NextLSN())
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	synced := l.SyncedLSN()
	st := l.Stats()
	if st.Appends != 1 || st.BufferedAppends != 9 || st.Records != 12 || st.Writes != 3 {
		t.Errorf("Stats: %d appends, %d buffered, %d records, %d writes; want 1, 9, 12, 3",
			st.Appends, st.BufferedAppends, st.Records, st.Writes)
	}
	wal.Abandon(l)
	opts.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	if last := replayCheck(t, opts, 0, m); last != synced || synced != 12 {
		t.Fatalf("after a crash keeping only synced data: log ends at %d, synced %d, want 12", last, synced)
	}
}

// TestBufferedSyncTo: SyncTo of an LSN still in the buffer writes the
// buffer and flushes it: the record survives a crash that keeps no
// unsynced data. So do Sync and Close.
func TestBufferedSyncTo(t *testing.T) {
	for _, how := range []string{"SyncTo", "Sync", "Close"} {
		t.Run(how, func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			opts, _ := testOptions(mem, 0)
			l, err := wal.Open(opts, 1)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			m := model{}
			appendGroup(t, l, m, rng, 2, 200)
			appendBuffered(t, l, m, rng, 3, 200) // 3..5
			target := wal.LSN(4)
			switch how {
			case "SyncTo":
				err = l.SyncTo(target)
			case "Sync":
				target, err = 5, l.Sync()
			case "Close":
				target, err = 5, l.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			if how != "Close" {
				if l.SyncedLSN() != target || l.WrittenLSN() != 5 {
					t.Fatalf("%s: SyncedLSN %d, WrittenLSN %d; want %d, 5", how, l.SyncedLSN(), l.WrittenLSN(), target)
				}
				wal.Abandon(l)
			}
			opts.FS = mem.CrashClone(vfs.CrashCloneCfg{})
			if last := replayCheck(t, opts, 0, m); last < target {
				t.Fatalf("%s(%d) returned, but a crash keeping only synced data ends the log at %d", how, target, last)
			}
		})
	}
}

// TestBufferedRotation: records that do not fit in the current segment
// behind the buffer go to a new segment; the buffer, salted for the old
// one, is written there first. Rotate with a non-empty buffer does the
// same. Everything replays, segment by segment.
func TestBufferedRotation(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts, _ := testOptions(mem, 4096)
	opts.BufferSize = 1 << 20 // only rotations and flushes write
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	m := model{}
	for range 40 {
		appendBuffered(t, l, m, rng, 1+rng.IntN(3), 300)
	}
	if segs := len(segmentNames(t, mem, opts.Dir)); segs < 3 {
		t.Fatalf("40 buffered appends of up to 3 x 340 bytes into 4 KiB segments made %d segments", segs)
	}
	if l.WrittenLSN() == 0 || l.SyncedLSN() == 0 {
		t.Fatalf("rotations left WrittenLSN %d, SyncedLSN %d: the buffer went nowhere", l.WrittenLSN(), l.SyncedLSN())
	}
	appendBuffered(t, l, m, rng, 2, 100)
	segs := len(segmentNames(t, mem, opts.Dir))
	if err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	if got := len(segmentNames(t, mem, opts.Dir)); got != segs+1 || l.SyncedLSN() != l.NextLSN()-1 {
		t.Fatalf("Rotate with a buffer: %d segments (was %d), SyncedLSN %d of %d", got, segs, l.SyncedLSN(), l.NextLSN()-1)
	}
	appendBuffered(t, l, m, rng, 3, 100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	opts.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	if last := replayCheck(t, opts, 0, m); last != wal.LSN(len(m)) {
		t.Fatalf("log ends at %d, %d records appended", last, len(m))
	}
}

// TestBufferedCrash mixes Append, AppendBuffered, WriteBuffered, SyncTo,
// Sync and Rotate, then crashes: the process only (what was written
// stays, the buffer is lost) or the machine (CrashClone keeping a random
// share of the unsynced data). The log must end at or after SyncedLSN,
// at or before the last written LSN (nothing of the buffer can show), and
// what it holds is a dense prefix of the records with their payloads: a
// crash loses a suffix.
func TestBufferedCrash(t *testing.T) {
	seeds := 80
	if testing.Short() {
		seeds = 15
	}
	lostBuffered := 0
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 0xB0F))
		mem := vfs.NewCrashableMem()
		opts, _ := testOptions(mem, int64(3000+rng.IntN(12000)))
		opts.BufferSize = 256 + rng.IntN(4096)
		m := model{}
		var last wal.LSN
		for round := range 6 {
			l, err := wal.Open(opts, last+1)
			if err != nil {
				t.Fatalf("seed %d round %d: Open(%d): %v", seed, round, last+1, err)
			}
			for range rng.IntN(40) {
				switch r := rng.IntN(20); {
				case r < 11:
					appendBuffered(t, l, m, rng, 1+rng.IntN(3), []int{40, 400, 2000}[rng.IntN(3)])
				case r < 15:
					appendGroup(t, l, m, rng, 1+rng.IntN(3), 400)
				case r < 16:
					err = l.WriteBuffered()
				case r < 18:
					// A target anywhere in the unsynced records, often
					// in the buffer.
					if unsynced := uint64(l.NextLSN() - 1 - l.SyncedLSN()); unsynced > 0 {
						err = l.SyncTo(l.SyncedLSN() + 1 + wal.LSN(rng.Uint64N(unsynced)))
					}
				case r < 19:
					err = l.Sync()
				default:
					err = l.Rotate()
				}
				if err != nil {
					t.Fatalf("seed %d round %d: %v", seed, round, err)
				}
			}
			synced, written, next := l.SyncedLSN(), l.WrittenLSN(), l.NextLSN()
			wal.Abandon(l)
			pct := 100 // a process crash: what was written stays
			if rng.IntN(3) > 0 {
				pct = rng.IntN(101)
				mem = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
				opts.FS = mem
			}
			got := replayCheck(t, opts, 0, m)
			if got < synced || got < last || got > written {
				t.Fatalf("seed %d round %d (%d%% unsynced kept): log ends at %d; synced %d, written %d, recovered before %d",
					seed, round, pct, got, synced, written, last)
			}
			if written < next-1 {
				lostBuffered++
			}
			for lsn := range m {
				if lsn > got {
					delete(m, lsn)
				}
			}
			last = got
		}
	}
	if lostBuffered == 0 {
		t.Fatal("no crash found records in the buffer; the test exercises nothing")
	}
}

// TestBufferedWriteError: a failed write of the buffer (by WriteBuffered,
// by the Append that takes it along, or by AppendBuffered reaching the
// limit) poisons the Log as a failed Append does.
func TestBufferedWriteError(t *testing.T) {
	for _, how := range []string{"WriteBuffered", "Append", "limit", "SyncTo"} {
		t.Run(how, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 8))
			mem := vfs.NewCrashableMem()
			tog := failOn(errorfs.OpFileWriteAt, ".log")
			opts, _ := testOptions(errorfs.Wrap(mem, tog), 0)
			opts.BufferSize = 2048
			l, err := wal.Open(opts, 1)
			if err != nil {
				t.Fatal(err)
			}
			m := model{}
			appendGroup(t, l, m, rng, 3, 300)
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			appendBuffered(t, l, m, rng, 2, 300)
			synced := l.SyncedLSN()
			tog.On()
			switch how {
			case "WriteBuffered":
				err = l.WriteBuffered()
			case "Append":
				err = tryAppend(l, m, rng, 1, 100)
			case "limit":
				for err == nil {
					next := l.NextLSN()
					p := randPayload(rng, next, 500)
					m[next] = p
					_, err = l.AppendBuffered([][]byte{p})
				}
			case "SyncTo":
				err = l.SyncTo(l.NextLSN() - 1)
			}
			if !errors.Is(err, errorfs.ErrInjected) {
				t.Fatalf("%s with a failing write: %v, want ErrInjected", how, err)
			}
			tog.Off()
			if _, err := l.AppendBuffered([][]byte{[]byte("x")}); !errors.Is(err, errorfs.ErrInjected) {
				t.Fatalf("AppendBuffered on a poisoned log: %v", err)
			}
			if err := l.WriteBuffered(); err != nil && !errors.Is(err, errorfs.ErrInjected) {
				t.Fatalf("WriteBuffered on a poisoned log: %v", err)
			}
			checkPoisoned(t, l, rng, errorfs.ErrInjected, synced)
			opts.FS = mem
			crashReplay(t, mem, opts, m, rng, 0, synced, true)
		})
	}
}
