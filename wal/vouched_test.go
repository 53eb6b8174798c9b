package wal_test

import (
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/wal"
)

// TestVouchedLSN checks that VouchedLSN never runs ahead of what a crash
// recovery can prove: after every sync, a crash that keeps only synced data
// yields ProvenDurable >= VouchedLSN, and VouchedLSN lags SyncedLSN by at
// most one sync.
func TestVouchedLSN(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts, _ := testOptions(mem, 4<<10)
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rng := rand.New(rand.NewPCG(7, 7))
	var prevSynced wal.LSN
	for round := 0; round < 40; round++ {
		for i := rng.IntN(3); i >= 0; i-- {
			if _, err := l.Append([][]byte{make([]byte, 1+rng.IntN(900))}); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		// A rotation inside Append syncs too, so the stamp may be newer
		// than the previous Sync; it never passes SyncedLSN.
		if got := l.VouchedLSN(); got < prevSynced || got > l.SyncedLSN() {
			t.Fatalf("round %d: VouchedLSN %d, want between the previous SyncedLSN %d and SyncedLSN %d", round, got, prevSynced, l.SyncedLSN())
		}
		prevSynced = l.SyncedLSN()
		clone := mem.CrashClone(vfs.CrashCloneCfg{})
		o := opts
		o.FS = clone
		proven, err := wal.ProvenDurable(o)
		if err != nil {
			t.Fatal(err)
		}
		if proven < l.VouchedLSN() {
			t.Fatalf("round %d: ProvenDurable after a crash is %d, below VouchedLSN %d", round, proven, l.VouchedLSN())
		}
	}
}
