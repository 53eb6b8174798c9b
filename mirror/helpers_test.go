package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
)

const testBS = 512

var testID = filehdr.DBID{1, 2, 3}

// injector fails the operations of one path whose kind is in kinds, while
// armed.
type injector struct {
	mu    sync.Mutex
	rules map[string]map[errorfs.OpKind]bool // path -> kinds; guarded by mu
	fired atomic.Int64
}

func (in *injector) String() string { return "mirror test injector" }

func (in *injector) MaybeError(op errorfs.Op) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.rules[op.Path][op.Kind] {
		in.fired.Add(1)
		return errorfs.ErrInjected
	}
	return nil
}

func (in *injector) fail(path string, kinds ...errorfs.OpKind) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.rules == nil {
		in.rules = map[string]map[errorfs.OpKind]bool{}
	}
	m := map[errorfs.OpKind]bool{}
	for _, k := range kinds {
		m[k] = true
	}
	in.rules[path] = m
}

func (in *injector) heal() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.rules = nil
}

// fixture is a set on a MemFS with error injection, a model of which
// blocks are allocated and what each holds, and an LSN counter.
type fixture struct {
	t     *testing.T
	mem   *vfs.MemFS
	inj   *injector
	fs    vfs.FS
	paths []string
	set   *Set
	lsn   atomic.Uint64 // the LSN counter; curLSN reads it
	acks  atomic.Int64

	mu      sync.Mutex        // guards content
	content map[uint64]uint64 // allocated block -> tag of its bytes
}

func newFixture(t *testing.T, replicas int) *fixture {
	t.Helper()
	f := &fixture{t: t, mem: vfs.NewCrashableMem(), inj: &injector{}, content: map[uint64]uint64{}}
	f.fs = errorfs.Wrap(f.mem, f.inj)
	for i := range replicas {
		d := fmt.Sprintf("r%d", i)
		if err := f.mem.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		f.paths = append(f.paths, f.fs.PathJoin(d, "heap"))
	}
	s, err := Create(f.config(), f.paths)
	if err != nil {
		t.Fatal(err)
	}
	f.set = s
	t.Cleanup(func() {
		if !f.set.closed.Load() {
			f.set.Close()
		}
	})
	return f
}

func (f *fixture) config() Config {
	return Config{
		FS: f.fs, DBID: testID, BlockSize: testBS, Logger: slog.New(slog.DiscardHandler),
		LSN:           f.curLSN,
		OnStateChange: func() error { f.acks.Add(1); return nil },
	}
}

// curLSN returns the LSN counter: every write so far was issued before it.
func (f *fixture) curLSN() base.LSN { return base.LSN(f.lsn.Load()) }

// block returns the bytes of a block holding tag.
func block(b, tag uint64) []byte {
	p := make([]byte, testBS)
	for i := 0; i < testBS; i += 16 {
		binary.LittleEndian.PutUint64(p[i:], b)
		binary.LittleEndian.PutUint64(p[i+8:], tag)
	}
	return p
}

// write allocates (if needed) and writes blocks [b, b+n) with tag, as one
// WriteAt, and bumps the LSN.
func (f *fixture) write(b uint64, n int, tag uint64) error {
	p := make([]byte, 0, n*testBS)
	for i := range n {
		p = append(p, block(b+uint64(i), tag)...)
	}
	f.mu.Lock()
	for i := range n {
		f.content[b+uint64(i)] = tag
	}
	f.mu.Unlock()
	err := f.set.WriteAt(p, b)
	f.lsn.Add(1)
	return err
}

func (f *fixture) mustWrite(b uint64, n int, tag uint64) {
	f.t.Helper()
	if err := f.write(b, n, tag); err != nil {
		f.t.Fatalf("write %d+%d: %v", b, n, err)
	}
}

func (f *fixture) free(b uint64, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		delete(f.content, b+uint64(i))
	}
}

func (f *fixture) allocated(b uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.content[b]
	return ok
}

func (f *fixture) blocks() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n uint64
	for b := range f.content {
		n = max(n, b+1)
	}
	return n
}

func (f *fixture) resync(id int, rate int64) (ResyncResult, error) {
	return f.set.Resync(f.t.Context(), id, ResyncOptions{Allocated: f.allocated, Blocks: f.blocks(), Rate: rate})
}

// readFile reads block b of replica i straight from the MemFS.
func (f *fixture) readFile(i int, b uint64) []byte {
	f.t.Helper()
	file, err := f.mem.Open(f.paths[i])
	if err != nil {
		f.t.Fatal(err)
	}
	defer file.Close()
	p := make([]byte, testBS)
	n, _ := file.ReadAt(p, int64(b+1)*testBS)
	clear(p[n:])
	return p
}

// writeFile overwrites block b of replica i straight in the MemFS.
func (f *fixture) writeFile(i int, b uint64, p []byte) {
	f.t.Helper()
	file, err := f.mem.OpenReadWrite(f.paths[i], vfs.WriteCategoryUnspecified)
	if err != nil {
		f.t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.WriteAt(p, int64(b+1)*testBS); err != nil {
		f.t.Fatal(err)
	}
}

// checkReplicas verifies that every replica in want holds the model's bytes
// for every allocated block.
func (f *fixture) checkReplicas(want ...int) {
	f.t.Helper()
	f.mu.Lock()
	content := make(map[uint64]uint64, len(f.content))
	for b, tag := range f.content {
		content[b] = tag
	}
	f.mu.Unlock()
	bad := 0
	for _, i := range want {
		for b, tag := range content {
			if got := f.readFile(i, b); !bytes.Equal(got, block(b, tag)) {
				if bad++; bad < 5 {
					f.t.Errorf("replica %d block %d: holds tag %d, want %d", i, b, binary.LittleEndian.Uint64(got[8:]), tag)
				}
			}
		}
	}
	if bad > 0 {
		f.t.Fatalf("%d blocks differ from the model", bad)
	}
}

func (f *fixture) status(id int) Status { return f.set.Status()[id] }

func mustState(t *testing.T, st Status, want State) {
	t.Helper()
	if st.State != want {
		t.Fatalf("replica %d is %v (cause %q), want %v", st.ID, st.State, st.Cause, want)
	}
}

func isInjected(err error) bool { return errors.Is(err, errorfs.ErrInjected) }
