package heapkv_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/wal"
)

// TestSyncMarkFault fails the flush of the log's sync mark. The syncer
// flushes the mark after the flush that made writes durable, or once the
// log is idle, so the write it overlaps may well be acknowledged (it was
// durable); but the failure fails the database: from the first ErrFailed
// on, every write is refused and changes nothing, and every acknowledged
// write survives Close and a crash.
func TestSyncMarkFault(t *testing.T) {
	markPath := faultWALDir + "/" + wal.SyncMarkName
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5A4C))
			mem := vfs.NewCrashableMem()
			inj := newInjector(injectRule{limit: 1, match: func(op errorfs.Op) bool {
				return isSyncOp(op.Kind) && op.Path == markPath
			}})
			db := openTestDBNoCheck(t, faultDir, faultOptions(errorfs.Wrap(mem, inj)))
			m := kvModel{}
			inj.armed.Store(true)
			failedAt := -1
			for i := 0; failedAt < 0; i++ {
				if i == 2000 {
					t.Fatalf("no write failed in %d writes (faults: %v)", i, inj.firedOps())
				}
				o := faultGenOp(rng, 24, false)
				err := o.apply(db)
				switch {
				case err == nil:
					m.record(o, true)
				case errors.Is(err, heapkv.ErrFailed):
					if len(inj.firedOps()) == 0 {
						t.Fatalf("%v: ErrFailed with no fault: %v", o, err)
					}
					m.record(o, false)
					failedAt = i
				default:
					t.Fatalf("%v failed with %v, want success or ErrFailed (faults: %v)", o, err, inj.firedOps())
				}
				if i%8 == 7 {
					time.Sleep(5 * time.Millisecond) // let the log go idle: the mark is flushed
				}
			}
			t.Logf("mark fault %v; first ErrFailed at write %d", inj.firedOps()[0], failedAt)
			for range 10 {
				o := faultGenOp(rng, 24, false)
				if err := o.apply(db); !errors.Is(err, heapkv.ErrFailed) {
					t.Fatalf("after ErrFailed, %v returned %v, want ErrFailed", o, err)
				}
			}
			m.verify(t, db, "live, after the fault")
			crash := mem.CrashClone(vfs.CrashCloneCfg{})
			inj.setPhase("close")
			if err := db.Close(); err != nil {
				t.Logf("Close after the fault: %v", err)
			}
			reopenAndVerify(t, mem, m, "reopen after Close")
			reopenAndVerify(t, crash, m, "crash clone (synced only)")
		})
	}
}
