package heapkv_test

// The one errorfs injector of the root tests: the I/O fault tests, the
// index fatal-path tests, the mirror tests and the disk-reserve test all
// fail file operations through it. (Tests that only watch operations, to
// take crash clones, use internal/testfs.)

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/heapkv/heapkv/wal"
)

// injector is an errorfs.Injector: while armed, an operation that matches
// one of its rules fails with the rule's error, each rule failing at most
// its limit of operations. It records every failed operation with the
// phase the test was in.
type injector struct {
	armed atomic.Bool
	phase atomic.Pointer[string]

	mu    sync.Mutex
	rules []*injectRule // guarded by mu
	fired []firedOp     // guarded by mu
}

// injectRule says which operations an injector fails, how many, and how.
type injectRule struct {
	match func(op errorfs.Op) bool // called, while armed, on each operation no earlier rule failed
	limit int                      // fail at most this many (< 0: every one)
	err   error                    // what they return; nil: errorfs.ErrInjected
	n     int                      // how many it failed
}

var _ errorfs.Injector = (*injector)(nil)

// newInjector returns an injector with rules, not armed.
func newInjector(rules ...injectRule) *injector {
	inj := &injector{}
	for _, r := range rules {
		inj.add(r)
	}
	return inj
}

type firedOp struct {
	op    errorfs.Op
	phase string
}

func (f firedOp) String() string {
	return fmt.Sprintf("%v %s (during %s)", opKindName(f.op.Kind), f.op.Path, f.phase)
}

func (inj *injector) String() string { return "heapkv test injector" }

// MaybeError implements errorfs.Injector.
func (inj *injector) MaybeError(op errorfs.Op) error {
	if !inj.armed.Load() {
		return nil
	}
	inj.mu.Lock()
	defer inj.mu.Unlock()
	for _, r := range inj.rules {
		if !r.match(op) || (r.limit >= 0 && r.n >= r.limit) {
			continue
		}
		r.n++
		phase := ""
		if p := inj.phase.Load(); p != nil {
			phase = *p
		}
		inj.fired = append(inj.fired, firedOp{op: op, phase: phase})
		if r.err != nil {
			return r.err
		}
		return errorfs.ErrInjected
	}
	return nil
}

// add adds a rule.
func (inj *injector) add(r injectRule) {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	inj.rules = append(inj.rules, &r)
}

// failPath adds a rule that fails every operation of one of kinds on a
// path starting with prefix.
func (inj *injector) failPath(prefix string, kinds ...errorfs.OpKind) {
	inj.add(injectRule{limit: -1, match: func(op errorfs.Op) bool {
		return strings.HasPrefix(op.Path, prefix) && slices.Contains(kinds, op.Kind)
	}})
}

// heal drops every rule.
func (inj *injector) heal() {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	inj.rules = nil
}

func (inj *injector) setPhase(s string) { inj.phase.Store(&s) }

// firedOps returns the operations failed so far, in order.
func (inj *injector) firedOps() []firedOp {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return slices.Clone(inj.fired)
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

// inWAL reports whether p is in the log directory and on the path that
// makes a write durable: not a spare segment being prepared in the
// background (".spare.tmp"), whose failure costs only a later zero-fill,
// and not the sync mark, which the syncer flushes after the flush that
// made a write durable (or when the log goes idle): its failure fails the
// database, but the write it happens to overlap was already durable and
// may be acknowledged.
func inWAL(p string) bool {
	if p != faultWALDir && !strings.HasPrefix(p, faultWALDir+"/") {
		return false
	}
	return !strings.HasSuffix(p, ".spare.tmp") && p != faultWALDir+"/"+wal.SyncMarkName
}
