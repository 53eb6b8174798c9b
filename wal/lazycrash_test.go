package wal_test

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/testfs"
	"github.com/heapkv/heapkv/wal"
)

// lazyProgress is what a crash must find.
type lazyProgress struct {
	durable wal.LSN // the highest LSN a returned SyncTo (Rotate, Close, Open) made durable
	mark    wal.LSN // MarkLSN after the last call that returned: the mark on disk
	vouched wal.LSN // VouchedLSN after the last call that returned
	ckpt    wal.LSN // the last checkpoint
}

// TestCrashLazyMark runs the syncer's pattern (SyncTo after every group,
// SyncMark now and then, never Sync) with small segments, frequent
// checkpoints (RemoveThrough recycles segments) and rotations into the
// recycled files, and crashes just before a random write-class operation
// (inside SyncTo, SyncMark, a rotation into a spare, a recycling, a spare
// preparation, Open, Close; in half the rounds, one of those on spares or
// a rename), keeping none or a random share of the unsynced data. After every crash: every record whose SyncTo returned survives with
// its exact payload, ProvenDurable covers the mark on disk and VouchedLSN,
// and damage to the record at the mark (or the newest one below it) is
// ErrCorrupt. Then recovery reopens the log and the next round crashes
// again.
func TestCrashLazyMark(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	var inSpare, recycled, damaged, rounds int
	for seed := range uint64(seeds) {
		s := lazyCrashLoop(t, seed)
		rounds += s.rounds
		inSpare += s.inSpare
		recycled += s.recycled
		damaged += s.damaged
	}
	if inSpare == 0 || recycled == 0 || damaged == 0 {
		t.Fatalf("%d crashes before an operation on a spare, %d recycled segments, %d damage checks: the test exercises too little",
			inSpare, recycled, damaged)
	}
	t.Logf("%d crashes, %d of them just before an operation on a spare; %d segments recycled; %d damaged copies refused",
		rounds, inSpare, recycled, damaged)
}

type lazyCrashStats struct{ rounds, inSpare, recycled, damaged int }

func lazyCrashLoop(t *testing.T, seed uint64) (st lazyCrashStats) {
	rng := rand.New(rand.NewPCG(seed, 0x1A2B))
	mem := vfs.NewCrashableMem()
	m := model{}
	var pr lazyProgress
	for round := range 8 {
		var (
			crashAt = 1 + rng.Int64N(120)
			clone   *vfs.MemFS
			atCrash lazyProgress
			what    string
			// In half the rounds the crash comes just before the k-th
			// operation on a spare, rename or one of the three operations
			// after a rename (rotation, recycling, preparation), where the
			// order of steps matters most.
			spareOnly   = rng.IntN(2) == 0
			spareOps    int64
			afterRename int
		)
		if spareOnly {
			crashAt = 1 + rng.Int64N(12)
		}
		pct := 0
		if rng.IntN(2) == 0 {
			pct = 10 + rng.IntN(81)
		}
		fs := testfs.Wrap(mem, func(op testfs.Op) {
			n := op.N
			if spareOnly {
				if op.Kind == testfs.Rename {
					afterRename = 4
				}
				if !strings.Contains(op.Path, ".spare") && afterRename == 0 {
					return
				}
				afterRename = max(afterRename-1, 0)
				spareOps++
				n = spareOps
			}
			if clone == nil && n == crashAt {
				clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
				atCrash = pr
				what = op.Kind.String() + " " + op.Path
			}
		})
		opts, _ := testOptions(fs, int64(1500+rng.IntN(4000)))
		opts = wal.WithInlinePrepare(opts) // the hook runs on this goroutine only
		opts.Logger = quietLogger()
		st.recycled += lazyCrashWorkload(t, opts, rng, m, &pr, func() bool { return clone != nil })
		if clone == nil {
			clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
			atCrash, what = pr, "the end"
		}
		st.rounds++
		if strings.Contains(what, ".spare") {
			st.inSpare++
		}
		opts.FS = clone
		got := replayCheck(t, opts, atCrash.ckpt, m) // fails the test on any error
		if got < atCrash.durable {
			t.Fatalf("seed %d round %d (crash before %s, %d%% unsynced kept): log ends at %d, but SyncTo(%d) had returned",
				seed, round, what, pct, got, atCrash.durable)
		}
		p, err := wal.ProvenDurable(opts)
		if err != nil || p < atCrash.mark || p < atCrash.vouched {
			t.Fatalf("seed %d round %d (crash before %s): ProvenDurable %d, %v; mark %d and vouched %d had returned",
				seed, round, what, p, err, atCrash.mark, atCrash.vouched)
		}
		if damageBelowMark(t, opts, atCrash.ckpt) {
			st.damaged++
		}
		for lsn := range m {
			if lsn > got {
				delete(m, lsn)
			}
		}
		mem = clone
		pr = lazyProgress{durable: got, mark: atCrash.mark, ckpt: atCrash.ckpt}
	}
	return st
}

// lazyCrashWorkload recovers the log (Open after pr.durable) and works on
// it until crashed() or about 40 steps are done, keeping pr up to date. It
// returns how many segments its Logs recycled.
func lazyCrashWorkload(t *testing.T, opts wal.Options, rng *rand.Rand, m model, pr *lazyProgress, crashed func() bool) (recycled int) {
	t.Helper()
	l, err := wal.Open(opts, pr.durable+1)
	if err != nil {
		t.Fatalf("Open(%d): %v", pr.durable+1, err)
	}
	acked := func() {
		pr.durable = max(pr.durable, l.SyncedLSN())
		pr.mark = max(pr.mark, l.MarkLSN())
		pr.vouched = max(pr.vouched, l.VouchedLSN())
	}
	acked()
	for step := 0; step < 40 && !crashed(); step++ {
		appendGroup(t, l, m, rng, 1+rng.IntN(4), []int{40, 400, 1500}[rng.IntN(3)])
		switch r := rng.IntN(12); {
		case r < 6:
			if err := l.SyncTo(l.NextLSN() - 1); err != nil {
				t.Fatal(err)
			}
		case r == 6:
			// A target inside the unsynced records: the rest stays unclaimed.
			if target := l.SyncedLSN() + 1; target < l.NextLSN() {
				if err := l.SyncTo(target); err != nil {
					t.Fatal(err)
				}
			}
		case r == 7:
			if err := l.SyncMark(); err != nil {
				t.Fatal(err)
			}
		case r == 8:
			if err := l.Rotate(); err != nil {
				t.Fatal(err)
			}
		case r == 9 && l.SyncedLSN() > pr.ckpt:
			pr.ckpt += wal.LSN(rng.Uint64N(uint64(l.SyncedLSN()-pr.ckpt) + 1))
			if err := l.RemoveThrough(pr.ckpt); err != nil {
				t.Fatal(err)
			}
		case r == 10:
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			acked()
			recycled += int(l.Stats().SegmentsRecycled)
			if crashed() {
				return recycled
			}
			last, err := wal.Replay(opts, pr.ckpt, func(wal.LSN, []byte) error { return nil })
			if err != nil || last != pr.durable {
				t.Fatalf("Replay after Close: %d, %v; want %d", last, err, pr.durable)
			}
			if l, err = wal.Open(opts, last+1); err != nil {
				t.Fatal(err)
			}
		}
		acked()
	}
	return recycled + int(l.Stats().SegmentsRecycled) // abandoned: a crash
}

// damageBelowMark flips a payload byte of the newest record at or below
// the sync mark (and after ckpt) in a copy of the log in opts and checks
// that Replay reports corruption. It reports whether there was such a
// record to damage.
func damageBelowMark(t *testing.T, opts wal.Options, ckpt wal.LSN) bool {
	t.Helper()
	if _, err := opts.FS.Stat(opts.Dir); err != nil {
		return false // the crash came before the directory was durable
	}
	files := snapshot(t, opts.FS, opts.Dir)
	b, ok := files[wal.SyncMarkName]
	if !ok {
		return false
	}
	_, mark, err := wal.DecodeSyncMark(b, testDBID, markPath)
	if err != nil {
		t.Fatal(err)
	}
	// Where each LSN lives: in the newest segment starting at or below it.
	type loc struct {
		name string
		off  int
	}
	where := map[wal.LSN]loc{}
	for _, name := range segmentNames(t, opts.FS, opts.Dir) {
		seg := files[name]
		if len(seg) < wal.SaltedSegmentHeaderSize || binary.LittleEndian.Uint32(seg[36:]) != 1 {
			continue
		}
		salt, off := segmentSalt(seg), wal.SaltedSegmentHeaderSize
		for {
			lsn, _, p, n, err := wal.DecodeSaltedRecord(seg[off:], salt)
			if err != nil {
				break
			}
			if len(p) > 0 {
				where[lsn] = loc{name, off + wal.SaltedRecordHeaderSize}
			}
			off += n
		}
	}
	for lsn := mark; lsn > ckpt; lsn-- {
		at, ok := where[lsn]
		if !ok {
			continue
		}
		o := opts
		fs := copyFS(t, opts.Dir, files)
		o.FS = fs
		flipByte(t, fs, fs.PathJoin(opts.Dir, at.name), int64(at.off))
		_, err := wal.Replay(o, ckpt, func(wal.LSN, []byte) error { return nil })
		wantCorrupt(t, err, at.name)
		return true
	}
	return false
}

// TestCrashEveryRecyclingStep crashes before each write-class operation, in
// turn, of a sequence that exercises every step of spares: a checkpoint
// that recycles segments (renames, directory sync), rotations into the
// recycled files (header write and flush, rename, directory sync), a
// rotation that must zero-fill a new spare inline (Rotate of a segment
// less than half full, with the pool empty), SyncTo and SyncMark. Each
// crash keeps none, half or all of the unsynced data and directory
// entries. The crashed log must replay every record whose SyncTo returned,
// exactly, and a recovery (Open, append, Close) on it must work and
// replay again.
func TestCrashEveryRecyclingStep(t *testing.T) {
	const segSize = 4 << 10
	crashes := 0
	for _, pct := range []int{0, 50, 100} {
		for k := int64(1); ; k++ {
			rng := rand.New(rand.NewPCG(1, 2)) // the same workload for every k
			crashRNG := rand.New(rand.NewPCG(uint64(k), uint64(pct)))
			mem := vfs.NewCrashableMem()
			var (
				armed   bool
				start   int64
				clone   *vfs.MemFS
				atCrash lazyProgress
				pr      lazyProgress
				what    string
			)
			fs := testfs.Wrap(mem, func(op testfs.Op) {
				if armed && clone == nil && op.N == start+k {
					clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: crashRNG})
					atCrash, what = pr, op.Kind.String()+" "+op.Path
				}
			})
			opts, _ := testOptions(fs, segSize)
			opts = wal.WithInlinePrepare(opts)
			opts.Logger = quietLogger()
			m := model{}
			l, err := wal.Open(opts, 1)
			if err != nil {
				t.Fatal(err)
			}
			grow := func(n int) { // n more segments, every group synced
				for segs := l.Stats().Segments; l.Stats().Segments < segs+n && clone == nil; {
					appendGroup(t, l, m, rng, 1, 1200)
					if err := l.SyncTo(l.NextLSN() - 1); err != nil {
						t.Fatal(err)
					}
					pr.durable = l.SyncedLSN()
				}
			}
			grow(4)
			start, armed = fs.Ops(), true
			if err := l.RemoveThrough(l.SyncedLSN() - 1); err != nil { // recycles 2
				t.Fatal(err)
			}
			pr.ckpt = l.SyncedLSN() - 1
			grow(2) // two rotations into the recycled files
			if clone == nil {
				if err := l.SyncMark(); err != nil {
					t.Fatal(err)
				}
				pr.mark = l.MarkLSN()
				if err := l.RemoveThrough(l.SyncedLSN() - 1); err != nil {
					t.Fatal(err)
				}
				pr.ckpt = l.SyncedLSN() - 1
			}
			// Empty the pool, then rotate early: an inline preparation.
			for clone == nil && l.Stats().Spares > 0 {
				appendGroup(t, l, m, rng, 1, 50)
				if err := l.Rotate(); err != nil {
					t.Fatal(err)
				}
				pr.durable, pr.mark = l.SyncedLSN(), l.MarkLSN()
			}
			if clone == nil {
				appendGroup(t, l, m, rng, 1, 50)
				if err := l.Rotate(); err != nil {
					t.Fatal(err)
				}
				pr.durable, pr.mark = l.SyncedLSN(), l.MarkLSN()
			}
			if clone == nil { // k is past the last operation
				if k < 20 {
					t.Fatalf("only %d operations", k-1)
				}
				break
			}
			crashes++
			o := opts
			o.FS = clone
			o.Logger = quietLogger()
			last := replayCheck(t, o, atCrash.ckpt, m)
			if last < atCrash.durable {
				t.Fatalf("crash %d before %s (%d%% kept): log ends at %d, SyncTo(%d) had returned", k, what, pct, last, atCrash.durable)
			}
			for lsn := range m {
				if lsn > last {
					delete(m, lsn)
				}
			}
			l2, err := wal.Open(o, last+1)
			if err != nil {
				t.Fatalf("crash %d before %s (%d%% kept): recovery Open(%d): %v", k, what, pct, last+1, err)
			}
			appendGroup(t, l2, m, rng, 2, 300)
			if err := l2.Close(); err != nil {
				t.Fatal(err)
			}
			if got := replayCheck(t, o, atCrash.ckpt, m); got != last+2 {
				t.Fatalf("crash %d before %s: after recovery the log ends at %d, want %d", k, what, got, last+2)
			}
		}
	}
	t.Logf("%d crashes", crashes)
}
