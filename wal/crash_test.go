package wal_test

import (
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/wal"
)

// TestCrashRecovery appends groups, syncs some, rotates and checkpoints
// now and then, crashes (CrashClone keeping 0% or 10..90% of unsynced 4 KiB
// blocks and directory entries) or only the process, replays and reopens,
// many rounds in a row:
// recovery after a recovered torn tail must work again and again.
//
// After each crash: every record up to the last SyncedLSN is present, the
// records come out as a dense prefix with exact payloads, and nothing a
// previous recovery returned is lost.
func TestCrashRecovery(t *testing.T) {
	seeds := 60
	if testing.Short() {
		seeds = 10
	}
	torn := 0
	for seed := range seeds {
		torn += crashLoop(t, uint64(seed))
	}
	if torn == 0 {
		t.Fatal("no crash cut a torn tail; the test exercises nothing")
	}
}

// crashLoop runs one seed and returns how many recoveries cut a torn tail.
func crashLoop(t *testing.T, seed uint64) (torn int) {
	rng := rand.New(rand.NewPCG(seed, 0xC0FFEE))
	mem := vfs.NewCrashableMem()
	opts, _ := testOptions(mem, int64(2000+rng.IntN(20000)))
	m := model{}
	var (
		last  wal.LSN // end of the log as of the last recovery
		ckpt  wal.LSN // the checkpoint: records <= ckpt need not be replayed
		round int
	)
	for round = range 12 {
		l, err := wal.Open(opts, last+1)
		if err != nil {
			t.Fatalf("seed %d round %d: Open(%d): %v", seed, round, last+1, err)
		}
		for range rng.IntN(25) {
			appendGroup(t, l, m, rng, 1+rng.IntN(5), []int{50, 700, 6000}[rng.IntN(3)])
			switch r := rng.IntN(10); {
			case r < 3:
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
			case r == 3:
				if err := l.Rotate(); err != nil {
					t.Fatal(err)
				}
			case r == 4 && l.SyncedLSN() > ckpt:
				// A checkpoint at some durable LSN deletes old segments.
				ckpt += wal.LSN(rng.Uint64N(uint64(l.SyncedLSN()-ckpt) + 1))
				if err := l.RemoveThrough(ckpt); err != nil {
					t.Fatal(err)
				}
			}
		}
		synced := l.SyncedLSN()
		wal.Abandon(l) // the process dies: its spare preparation too
		pct := 0
		if rng.IntN(3) > 0 {
			pct = 10 + rng.IntN(81)
		}
		// Crash: the Log is abandoned, never closed. One crash in four is a
		// process crash: the unsynced data stays readable but still
		// unsynced, so a later power loss (CrashClone) may drop it; what
		// Replay returned must survive that (Open syncs it).
		if rng.IntN(4) > 0 {
			mem = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
			opts.FS = mem
		} else {
			pct = 100
		}
		got := replayCheck(t, opts, ckpt, m)
		if got < synced || got < last {
			t.Fatalf("seed %d round %d (%d%% unsynced kept): log ends at %d, but %d was synced and %d recovered before",
				seed, round, pct, got, synced, last)
		}
		if got < l.NextLSN()-1 {
			torn++
		}
		// Records past the new end are gone; their LSNs will be reused.
		for lsn := range m {
			if lsn > got {
				delete(m, lsn)
			}
		}
		last = got
	}
	if testing.Verbose() {
		t.Logf("seed %d: %d rounds, %d torn tails, log ends at %d, checkpoint %d", seed, round+1, torn, last, ckpt)
	}
	return torn
}
