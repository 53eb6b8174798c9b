package heapkv_test

// The fault injector the I/O fault tests run the database under.

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// faultInjector fails, while armed, the first limit operations (every one if
// limit < 0) that match accepts, and records them with the phase the test
// was in.
type faultInjector struct {
	armed atomic.Bool
	match func(op errorfs.Op) bool
	limit int
	phase atomic.Pointer[string]

	mu    sync.Mutex
	fired []firedOp
}

type firedOp struct {
	op    errorfs.Op
	phase string
}

func (f firedOp) String() string {
	return fmt.Sprintf("%v %s (during %s)", opKindName(f.op.Kind), f.op.Path, f.phase)
}

func (f *faultInjector) String() string { return "heapkv fault injector" }

func (f *faultInjector) MaybeError(op errorfs.Op) error {
	if !f.armed.Load() || !f.match(op) {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.limit >= 0 && len(f.fired) >= f.limit {
		return nil
	}
	phase := ""
	if p := f.phase.Load(); p != nil {
		phase = *p
	}
	f.fired = append(f.fired, firedOp{op: op, phase: phase})
	return errorfs.ErrInjected
}

func (f *faultInjector) setPhase(s string) { f.phase.Store(&s) }

func (f *faultInjector) firedOps() []firedOp {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]firedOp(nil), f.fired...)
}

func opKindName(k errorfs.OpKind) string {
	names := map[errorfs.OpKind]string{
		errorfs.OpCreate: "create", errorfs.OpLink: "link", errorfs.OpOpen: "open",
		errorfs.OpOpenDir: "opendir", errorfs.OpRemove: "remove", errorfs.OpRemoveAll: "removeall",
		errorfs.OpRename: "rename", errorfs.OpReuseForWrite: "reuse", errorfs.OpMkdirAll: "mkdirall",
		errorfs.OpLock: "lock", errorfs.OpList: "list", errorfs.OpFilePreallocate: "preallocate",
		errorfs.OpStat: "stat", errorfs.OpGetDiskUsage: "diskusage", errorfs.OpFileClose: "close",
		errorfs.OpFileRead: "read", errorfs.OpFileReadAt: "readat", errorfs.OpFileWrite: "write",
		errorfs.OpFileWriteAt: "writeat", errorfs.OpFileStat: "fstat", errorfs.OpFileSync: "sync",
		errorfs.OpFileSyncData: "syncdata", errorfs.OpFileSyncTo: "syncto", errorfs.OpFileFlush: "flush",
	}
	if n, ok := names[k]; ok {
		return n
	}
	return fmt.Sprintf("op%d", k)
}

func isSyncOp(k errorfs.OpKind) bool {
	return k == errorfs.OpFileSync || k == errorfs.OpFileSyncData || k == errorfs.OpFileSyncTo
}

// Paths of the database's own files on the fault FS.
var (
	faultHeapPath = faultDir + "/heap"
	faultWALDir   = faultDir + "/wal"
	faultIndexDir = faultDir + "/index"
)

func inWAL(p string) bool { return p == faultWALDir || strings.HasPrefix(p, faultWALDir+"/") }
