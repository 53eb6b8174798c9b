package wal_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv/wal"
)

// failOn returns a switchable injector that fails operations of kind k
// on files whose path ends in suffix (".log": segments; ".spare": the
// rename of a spare into a segment, whose path errorfs reports as the
// spare's).
func failOn(k errorfs.OpKind, suffix string) *errorfs.Toggle {
	return &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == k && strings.HasSuffix(op.Path, suffix) {
			return errorfs.ErrInjected
		}
		return nil
	})}
}

// tryAppend puts the payloads into m before appending them (a failed
// Append may still leave whole records on disk) and returns Append's error.
func tryAppend(l *wal.Log, m model, rng *rand.Rand, n, maxLen int) error {
	next := l.NextLSN()
	ps := make([][]byte, n)
	for i := range ps {
		ps[i] = randPayload(rng, next+wal.LSN(i), maxLen)
		m[next+wal.LSN(i)] = ps[i]
	}
	_, err := l.Append(ps)
	return err
}

// checkPoisoned checks that every write path of l keeps failing with an
// error wrapping cause, and that SyncedLSN stays at synced.
func checkPoisoned(t *testing.T, l *wal.Log, rng *rand.Rand, cause error, synced wal.LSN) {
	t.Helper()
	if err := tryAppend(l, model{}, rng, 2, 100); !errors.Is(err, cause) {
		t.Fatalf("Append on a poisoned log: %v, want %v", err, cause)
	}
	if err := l.Sync(); !errors.Is(err, cause) {
		t.Fatalf("Sync on a poisoned log: %v, want %v", err, cause)
	}
	if err := l.Rotate(); !errors.Is(err, cause) {
		t.Fatalf("Rotate on a poisoned log: %v, want %v", err, cause)
	}
	if got := l.SyncedLSN(); got != synced {
		t.Fatalf("SyncedLSN moved from %d to %d after the failure", synced, got)
	}
	if err := l.Close(); !errors.Is(err, cause) {
		t.Fatalf("Close on a poisoned log: %v, want %v", err, cause)
	}
}

// crashReplay crash-clones mem and checks the replayed log is a dense
// prefix holding at least synced (with exact, exactly synced when pct is 0:
// nothing beyond it was ever fsynced).
func crashReplay(t *testing.T, mem *vfs.MemFS, opts wal.Options, m model, rng *rand.Rand, pct int, synced wal.LSN, exact bool) (*vfs.MemFS, wal.LSN) {
	t.Helper()
	clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
	opts.FS = clone
	last := replayCheck(t, opts, 0, m)
	if last < synced || exact && pct == 0 && last != synced {
		t.Fatalf("after crash (%d%% unsynced kept): log ends at %d, SyncedLSN was %d", pct, last, synced)
	}
	return clone, last
}

func TestFaultWriteAndSync(t *testing.T) {
	for _, c := range []struct {
		name   string
		op     errorfs.OpKind
		suffix string
		fail   func(*wal.Log, model, *rand.Rand) error
	}{
		{"write", errorfs.OpFileWriteAt, ".log", func(l *wal.Log, m model, rng *rand.Rand) error { return tryAppend(l, m, rng, 3, 500) }},
		{"sync", errorfs.OpFileSyncData, ".log", func(l *wal.Log, _ model, _ *rand.Rand) error { return l.Sync() }},
		{"syncto", errorfs.OpFileSyncData, ".log", func(l *wal.Log, _ model, _ *rand.Rand) error { return l.SyncTo(l.NextLSN() - 1) }},
		{"rotate", errorfs.OpRename, ".spare", func(l *wal.Log, m model, rng *rand.Rand) error {
			for {
				if err := tryAppend(l, m, rng, 1, 500); err != nil {
					return err
				}
			}
		}},
	} {
		for _, pct := range []int{0, 50, 100} {
			t.Run(fmt.Sprintf("%s/keep%d%%", c.name, pct), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(pct), 77))
				mem := vfs.NewCrashableMem()
				tog := failOn(c.op, c.suffix)
				opts, _ := testOptions(errorfs.Wrap(mem, tog), 4096)
				l, err := wal.Open(opts, 1)
				if err != nil {
					t.Fatal(err)
				}
				m := model{}
				for range 20 {
					appendGroup(t, l, m, rng, 1+rng.IntN(3), 500)
				}
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				appendGroup(t, l, m, rng, 2, 500) // unsynced
				before := l.SyncedLSN()
				tog.On()
				if err := c.fail(l, m, rng); !errors.Is(err, errorfs.ErrInjected) {
					t.Fatalf("%s failure: %v, want ErrInjected", c.name, err)
				}
				tog.Off() // the disk "recovers"; the log must not
				synced := l.SyncedLSN()
				if c.name != "rotate" && synced != before {
					// (A failed rotation has synced the old segment first.)
					t.Fatalf("failed %s moved SyncedLSN from %d to %d", c.name, before, synced)
				}
				checkPoisoned(t, l, rng, errorfs.ErrInjected, synced)
				opts.FS = mem
				crashReplay(t, mem, opts, m, rng, pct, synced, true)
			})
		}
	}
}

// Random write and sync errors, each followed by a crash, recovery and more
// work on the recovered state.
func TestFaultRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	mem := vfs.NewCrashableMem()
	// The injector also runs on the Log's spare preparation goroutine.
	var (
		injMu    sync.Mutex
		injRNG   = rand.New(rand.NewPCG(13, 14))
		failures int
	)
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync, errorfs.OpFileSyncData,
			errorfs.OpCreate, errorfs.OpRename, errorfs.OpOpenDir:
			injMu.Lock()
			defer injMu.Unlock()
			if injRNG.IntN(40) == 0 {
				failures++
				return errorfs.ErrInjected
			}
		}
		return nil
	})
	m := model{}
	last := wal.InvalidLSN
	durable := wal.InvalidLSN // known durable: synced, or recovered and then Opened
	for round := range 40 {
		opts, _ := testOptions(errorfs.Wrap(mem, inj), 3000)
		l, err := wal.Open(opts, last+1)
		if err == nil {
			durable = last
			for err == nil {
				if err = tryAppend(l, m, rng, 1+rng.IntN(4), 800); err == nil && rng.IntN(3) == 0 {
					err = l.Sync()
				}
			}
			if !errors.Is(err, errorfs.ErrInjected) {
				t.Fatalf("round %d: %v", round, err)
			}
			durable = l.SyncedLSN()
			checkPoisoned(t, l, rng, errorfs.ErrInjected, durable)
		} else if !errors.Is(err, errorfs.ErrInjected) {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		opts.FS = mem
		pct := []int{0, 30, 70}[round%3]
		mem, last = crashReplay(t, mem, opts, m, rng, pct, durable, false)
		for lsn := range m {
			if lsn > last {
				delete(m, lsn)
			}
		}
	}
	injMu.Lock()
	defer injMu.Unlock()
	if failures < 20 {
		t.Fatalf("only %d injected failures", failures)
	}
}

// shortWriteFS writes only half of a buffer into a segment and fails,
// when armed.
type shortWriteFS struct {
	vfs.FS
	armed *atomic.Bool
}

func (s shortWriteFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := s.FS.OpenReadWrite(name, c, opts...)
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &shortWriteFile{File: f, armed: s.armed}, nil
}

type shortWriteFile struct {
	vfs.File
	armed *atomic.Bool
}

var errShort = errors.New("short write")

func (f *shortWriteFile) WriteAt(p []byte, off int64) (int, error) {
	if f.armed.Load() {
		n, _ := f.File.WriteAt(p[:len(p)/2], off)
		return n, errShort
	}
	return f.File.WriteAt(p, off)
}

// A write that lands half a group: the log is poisoned, and recovery
// after a crash cuts the half record (and keeps whole ones only if the
// crash kept them), again and again.
func TestFaultShortWrite(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	mem := vfs.NewCrashableMem()
	m := model{}
	last := wal.InvalidLSN
	for round := range 10 {
		armed := &atomic.Bool{}
		opts, _ := testOptions(shortWriteFS{FS: mem, armed: armed}, 0)
		l, err := wal.Open(opts, last+1)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			appendGroup(t, l, m, rng, 2, 300)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		synced := l.SyncedLSN()
		armed.Store(true)
		if err := tryAppend(l, m, rng, 4, 300); !errors.Is(err, errShort) {
			t.Fatalf("round %d: Append: %v, want the short write", round, err)
		}
		armed.Store(false)
		checkPoisoned(t, l, rng, errShort, synced)
		opts.FS = mem
		mem, last = crashReplay(t, mem, opts, m, rng, []int{0, 100}[round%2], synced, true)
		for lsn := range m {
			if lsn > last {
				delete(m, lsn)
			}
		}
	}
}
