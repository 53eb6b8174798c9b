package heapkv_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/heapkv/heapkv"
)

// TestHeapWriteRedone fails the heap writes of a durable write's carried
// value (the heap writer's, heapwriter.go) once, then twice. Once: the
// write took effect, so it reports ErrHeapWrite, reads back, and survives
// a reopen; the database goes on. Twice: the database fails, and reopened
// it passes Check with the key holding its old or its new value.
func TestHeapWriteRedone(t *testing.T) {
	for _, failures := range []int{1, 2} {
		t.Run(fmt.Sprintf("failures=%d", failures), func(t *testing.T) {
			mem := vfs.NewMem()
			inj := newInjector(injectRule{limit: failures, match: func(op errorfs.Op) bool {
				return op.Kind == errorfs.OpFileWriteAt && op.Path == faultHeapPath
			}})
			db := openTestDBNoCheck(t, faultDir, faultOptions(errorfs.Wrap(mem, inj)))
			old, val := bytes.Repeat([]byte{'o'}, 700), bytes.Repeat([]byte{'n'}, 700)
			for i := range 10 {
				if err := db.Put(fmt.Appendf(nil, "k%d", i), old); err != nil {
					t.Fatal(err)
				}
			}
			inj.armed.Store(true)
			err := db.Put([]byte("k3"), val)
			inj.armed.Store(false)
			if n := len(inj.firedOps()); n != failures {
				t.Fatalf("%d heap writes failed, want %d: the test exercises nothing", n, failures)
			}
			if failures == 1 {
				if !errors.Is(err, heapkv.ErrHeapWrite) || !errors.Is(err, errorfs.ErrInjected) {
					t.Fatalf("Put with one failed heap write = %v, want ErrHeapWrite wrapping the injected error", err)
				}
				if got, err := db.Get([]byte("k3")); err != nil || !bytes.Equal(got, val) {
					t.Fatalf("Get after the redone write = %q..., %v; want the new value", got[:min(len(got), 4)], err)
				}
				if err := db.Put([]byte("k11"), val); err != nil {
					t.Fatalf("Put after a redone heap write: %v", err)
				}
			} else {
				if !errors.Is(err, heapkv.ErrFailed) {
					t.Fatalf("Put whose heap write failed twice = %v, want ErrFailed", err)
				}
				if err := db.Put([]byte("k11"), val); !errors.Is(err, heapkv.ErrFailed) {
					t.Fatalf("Put after the failure = %v, want ErrFailed", err)
				}
			}
			_ = db.Close()

			db2 := openTestDB(t, faultDir, faultOptions(mem)) // cleanup runs Check
			got, err := db2.Get([]byte("k3"))
			switch {
			case err != nil:
				t.Fatalf("Get after reopen: %v", err)
			case failures == 1 && !bytes.Equal(got, val):
				t.Fatalf("after reopen k3 holds %q..., want the new value", got[:min(len(got), 4)])
			case !bytes.Equal(got, val) && !bytes.Equal(got, old):
				t.Fatalf("after reopen k3 holds %q..., want its old or its new value", got[:min(len(got), 4)])
			}
		})
	}
}
