package wal_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/testfs"
	"github.com/heapkv/heapkv/wal"
)

// TestCrashSyncMark proves the sync mark never makes a genuine crash look
// like corruption. A workload (appends, Syncs, rotations, checkpoints
// with RemoveThrough, clean Close and reopen) runs on a crashable file
// system seen through testfs, and crashes just before a random write-class
// operation: inside Open (before, during or after the mark file is
// created), inside Sync (between the segment fsync, the mark's pwrite and
// its fdatasync), inside rotation and Close. The crash keeps none or a
// random share of the unsynced data. Replay of the crash must never fail,
// must return exact records and every record whose Sync (or Rotate, Close,
// Open) had returned, and ProvenDurable must cover those; then recovery
// reopens the log on the crashed state and the next round crashes again.
func TestCrashSyncMark(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	var inMark, rounds int
	for seed := range uint64(seeds) {
		r, m := markCrashLoop(t, seed)
		rounds += r
		inMark += m
	}
	if inMark == 0 {
		t.Fatal("no crash hit an operation on the sync mark file; the test exercises nothing")
	}
	t.Logf("%d crashes, %d of them just before an operation on the sync mark file", rounds, inMark)
}

// markProgress is what a crash must find.
type markProgress struct {
	durable wal.LSN // Replay must return at least this
	acked   wal.LSN // the highest LSN that a returned Open, Sync, Rotate or Close made durable: ProvenDurable must cover it
	ckpt    wal.LSN // the last checkpoint
}

// set records that a call made everything through lsn durable.
func (p *markProgress) set(lsn wal.LSN) {
	p.acked = lsn
	p.durable = max(p.durable, lsn)
}

// markCrashLoop runs the rounds of one seed; it returns how many crashes
// it made and how many of them came before an operation on the mark file.
func markCrashLoop(t *testing.T, seed uint64) (rounds, inMark int) {
	rng := rand.New(rand.NewPCG(seed, 0x5EED))
	mem := vfs.NewCrashableMem()
	m := model{}
	// Records a recovery returned must survive later crashes; a recovery
	// that has not finished Open has not yet acknowledged them, though.
	var pr markProgress
	for round := range 8 {
		var (
			crashAt = 1 + rng.Int64N(80)
			clone   *vfs.MemFS
			atCrash markProgress
			what    string
		)
		pct := 0
		if rng.IntN(2) == 0 {
			pct = 10 + rng.IntN(81)
		}
		fs := testfs.Wrap(mem, func(op testfs.Op) {
			if clone == nil && op.N == crashAt {
				clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
				atCrash = pr
				what = op.Kind.String() + " " + op.Path
			}
		})
		opts, _ := testOptions(fs, int64(1500+rng.IntN(4000)))
		opts = wal.WithInlinePrepare(opts) // the hook runs on this goroutine only
		opts.Logger = quietLogger()
		markCrashWorkload(t, opts, rng, m, &pr, func() bool { return clone != nil })
		if clone == nil { // the workload ended first: crash now
			clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
			atCrash, what = pr, "the end"
		}
		rounds++
		if strings.Contains(what, wal.SyncMarkName) {
			inMark++
		}
		opts.FS = clone
		got := replayCheck(t, opts, atCrash.ckpt, m) // fails the test on any error
		if got < atCrash.durable {
			t.Fatalf("seed %d round %d (crash before %s, %d%% unsynced kept): log ends at %d, but %d was durable",
				seed, round, what, pct, got, atCrash.durable)
		}
		if p, err := wal.ProvenDurable(opts); err != nil || p < atCrash.acked {
			t.Fatalf("seed %d round %d (crash before %s): ProvenDurable %d, %v; %d was acknowledged",
				seed, round, what, p, err, atCrash.acked)
		}
		for lsn := range m {
			if lsn > got {
				delete(m, lsn)
			}
		}
		mem = clone
		pr = markProgress{durable: got, acked: atCrash.acked, ckpt: atCrash.ckpt}
	}
	return rounds, inMark
}

// markCrashWorkload recovers the log (Open after the end pr.durable) and
// works on it until crashed() or about 30 steps are done, keeping pr up to
// date. The Log is abandoned at the end (a crash), or closed and reopened
// now and then.
func markCrashWorkload(t *testing.T, opts wal.Options, rng *rand.Rand, m model, pr *markProgress, crashed func() bool) {
	t.Helper()
	l, err := wal.Open(opts, pr.durable+1)
	if err != nil {
		t.Fatalf("Open(%d): %v", pr.durable+1, err)
	}
	pr.set(pr.durable)
	for step := 0; step < 30 && !crashed(); step++ {
		appendGroup(t, l, m, rng, 1+rng.IntN(4), []int{40, 400, 3000}[rng.IntN(3)])
		switch r := rng.IntN(10); {
		case r < 5:
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			pr.set(l.SyncedLSN())
		case r == 5:
			if err := l.Rotate(); err != nil {
				t.Fatal(err)
			}
			pr.set(l.SyncedLSN())
		case r == 6 && l.SyncedLSN() > pr.ckpt:
			// The caller records the checkpoint durably before it deletes
			// segments; a crash in RemoveThrough replays from it.
			pr.ckpt += wal.LSN(rng.Uint64N(uint64(l.SyncedLSN()-pr.ckpt) + 1))
			if err := l.RemoveThrough(pr.ckpt); err != nil {
				t.Fatal(err)
			}
		case r == 7:
			// A clean shutdown and recovery on the same file system.
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			pr.set(l.SyncedLSN())
			if crashed() {
				return
			}
			last, err := wal.Replay(opts, pr.ckpt, func(wal.LSN, []byte) error { return nil })
			if err != nil || last != pr.durable {
				t.Fatalf("Replay after Close: %d, %v; want %d", last, err, pr.durable)
			}
			if l, err = wal.Open(opts, last+1); err != nil {
				t.Fatal(err)
			}
		}
	}
}
