package heapkv_test

// Pebble's fatal paths (issue 11, index fault item 2). With Pebble's
// errorfs, every write or every sync of the index's MANIFEST, or every
// creation of an index table, fails (from the moment the injection is armed
// until it is removed) during one of: a flush (Checkpoint), a compaction
// (the whole index, through the CompactIndex test hook), a partial
// compaction (one key range, CompactIndexRange), Open (of a crashed
// database whose log must be replayed and checkpointed), and Close. For
// each:
//
//   - nothing panics and nothing hangs: the step the fault hits, and Close,
//     return within fatalStepLimit;
//   - the database ends in its failed state: a write returns an error
//     wrapping ErrFailed (for Open: Open fails, or returns a handle whose
//     writes so fail; for Close, after which every write returns ErrClosed:
//     Close returns an error);
//   - reads on the live handle return the acknowledged value or an error,
//     never a wrong value;
//   - with the injection removed, reopening (after Close, and from a crash
//     clone taken right after the fault) recovers every acknowledged write
//     exactly, Check passes, and the database takes writes.
//
// Each case runs in a child process (index_child_test.go), so a panic on
// one of Pebble's goroutines, which ends the process, is reported as the
// case's failure. The partial-compaction case is the one such a panic came
// from: a compaction whose MANIFEST edit fails while other tables stay in
// L0 (the fence now swallows that edit; indexfence.go).
//
//	go test -race -run TestIndexFatal -count=1 -v .

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv"
)

const (
	ifEnvCase      = "HEAPKV_INDEXFATAL_CASE"
	ifPrefix       = "indexfatal: "
	fatalStepLimit = 10 * time.Second // the faulting step, and Close
	fatalSetup     = 60 * time.Second // any other step
)

var (
	fatalPhases = []string{"flush", "compaction", "partial-compaction", "open", "close"}
	fatalFaults = []string{"manifest-write", "manifest-sync", "table-create"}
)

// fatalMatch returns the operations fault fails.
func fatalMatch(fault string) func(op errorfs.Op) bool {
	inIndex := func(p string) (string, bool) { return strings.CutPrefix(p, faultIndexDir+"/") }
	manifest := func(p string) bool {
		base, ok := inIndex(p)
		return ok && strings.HasPrefix(base, "MANIFEST-")
	}
	switch fault {
	case "manifest-write":
		return func(op errorfs.Op) bool { return op.Kind == errorfs.OpFileWrite && manifest(op.Path) }
	case "manifest-sync":
		return func(op errorfs.Op) bool { return isSyncOp(op.Kind) && manifest(op.Path) }
	case "table-create":
		return func(op errorfs.Op) bool {
			base, ok := inIndex(op.Path)
			return ok && op.Kind == errorfs.OpCreate && strings.HasSuffix(base, ".sst")
		}
	}
	panic("unknown fault " + fault)
}

// TestIndexFatal runs each phase x fault case in its own child process.
func TestIndexFatal(t *testing.T) {
	for _, phase := range fatalPhases {
		for _, fault := range fatalFaults {
			name := phase + "/" + fault
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				run := runTrialChild("TestIndexFatalChild", ifPrefix, []string{ifEnvCase + "=" + name},
					fatalSetup+30*time.Second)
				step, class, detail, hung := "", "", "", false
				for _, l := range run.lines {
					verb, rest, _ := strings.Cut(l, " ")
					switch verb {
					case "step":
						step = rest
					case "end":
						var quoted string
						class, quoted, _ = strings.Cut(rest, " ")
						detail, _ = strconv.Unquote(quoted)
					case "hang":
						hung = true
					}
				}
				switch ps := panicSummary(run.stderr); {
				case class == "ok":
					t.Logf("%s: %s", name, detail)
					if run.err != nil {
						t.Errorf("the child exited with %v after passing:\n%s", run.err, tailString(run.stderr, 4000))
					}
				case class == "fail":
					t.Errorf("%s: fail: %s", name, detail)
				case hung:
					t.Errorf("%s: hang during %q (over %v); the child's goroutines:\n%s", name, step, fatalStepLimit, goroutineDump(run.stderr))
				case ps != "":
					t.Errorf("%s: panic during %q: %s", name, step, ps)
				default:
					t.Errorf("%s: the child died during %q: %v\n%s", name, step, run.err, tailString(run.stderr, 4000))
				}
			})
		}
	}
}

// TestIndexFatalChild runs one case of TestIndexFatal and reports it.
func TestIndexFatalChild(t *testing.T) {
	name := os.Getenv(ifEnvCase)
	if name == "" {
		t.Skip("child of TestIndexFatal only")
	}
	phase, fault, _ := strings.Cut(name, "/")
	var wd *time.Timer
	step := func(s string, limit time.Duration) {
		if wd != nil {
			wd.Stop()
		}
		fmt.Printf("%sstep %s\n", ifPrefix, s)
		wd = startWatchdog(ifPrefix, s, limit)
	}
	notes, err := runFatalCase(phase, fault, step)
	wd.Stop()
	if err != nil {
		fmt.Printf("%send fail %q\n", ifPrefix, err.Error()+" (saw: "+strings.Join(notes, "; ")+")")
		return
	}
	fmt.Printf("%send ok %q\n", ifPrefix, strings.Join(notes, "; "))
}

// runFatalCase runs phase with fault injected; it returns what it saw, and
// an error for the first broken expectation.
func runFatalCase(phase, fault string, step func(string, time.Duration)) (notes []string, err error) {
	note := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
	rng := rand.New(rand.NewPCG(11, 0xFA7A1))
	mem := vfs.NewCrashableMem()
	inj := newInjector(injectRule{match: fatalMatch(fault), limit: -1})
	m := kvModel{}

	step("setup", fatalSetup)
	db, err := heapkv.Open(faultDir, faultOptions(errorfs.Wrap(mem, inj)))
	if err != nil {
		return notes, fmt.Errorf("open: %w", err)
	}
	write := func(n int) error {
		for range n {
			o := faultGenOp(rng, 30, false)
			if err := o.apply(db); err != nil {
				return fmt.Errorf("setup: %v: %w", o, err)
			}
			m.record(o, true)
		}
		return nil
	}
	setup := []func() error{func() error { return write(40) }, db.Checkpoint, func() error { return write(40) }}
	if phase == "compaction" {
		// Settle the index into one bottom-level table, then put an
		// overlapping table in L0 and empty the memtable: the compaction
		// must rewrite both.
		setup = append(setup, db.Checkpoint, func() error { return heapkv.CompactIndex(db) },
			func() error { return write(40) }, db.Checkpoint)
	}
	if phase == "partial-compaction" {
		// Settle the index into the bottom level, then make three L0
		// tables over disjoint key ranges, the first overlapping the
		// bottom level. The compaction takes the first range only: it
		// rewrites that table with the bottom level's, and the other two
		// stay in L0, so the edit that fails re-lays L0's sublevels around
		// them (a rollback that Pebble's own checks rejected, on a full
		// disk in CI). Three tables stay below Pebble's L0 compaction
		// trigger.
		setup = append(setup, db.Checkpoint, func() error { return heapkv.CompactIndex(db) })
		for _, r := range []string{"k", "pb", "pc"} {
			setup = append(setup, func() error {
				for i := range 10 {
					o := wOp{kind: wPut, key: fmt.Sprintf("%s%02d", r, i), val: faultGenValue(rng, false)}
					if err := o.apply(db); err != nil {
						return fmt.Errorf("setup: %v: %w", o, err)
					}
					m.record(o, true)
				}
				return nil
			}, db.Checkpoint)
		}
	}
	for _, f := range setup {
		if err := f(); err != nil {
			return notes, err
		}
	}

	fs := mem // what is reopened at the end
	var crash *vfs.MemFS
	switch phase {
	case "flush", "compaction", "partial-compaction":
		inj.armed.Store(true)
		switch phase {
		case "flush":
			step("Checkpoint, with the fault", fatalStepLimit)
			err := db.Checkpoint()
			note("Checkpoint: %v", err)
			if err == nil && len(inj.firedOps()) > 0 {
				return notes, errors.New("Checkpoint succeeded although its index flush failed")
			}
		case "compaction":
			step("compaction, with the fault", fatalStepLimit)
			note("compaction: %v", heapkv.CompactIndex(db))
		default:
			step("partial compaction, with the fault", fatalStepLimit)
			if n := heapkv.IndexLevels(db)[0]; n < 3 {
				return notes, fmt.Errorf("%d L0 tables before the partial compaction (%s); want 3 or more, so some stay in L0", n, heapkv.IndexTables(db))
			}
			note("tables before: %v", heapkv.IndexTables(db))
			note("compaction of [k, l): %v", heapkv.CompactIndexRange(db, []byte("k"), []byte("l")))
			note("tables per level after: %v", heapkv.IndexLevels(db))
		}
		if len(inj.firedOps()) == 0 {
			return notes, errors.New("the fault never fired: the case tests nothing")
		}
		crash = mem.CrashClone(vfs.CrashCloneCfg{})
		if err := fatalLive(db, m, step, note); err != nil {
			return notes, err
		}
		step("Close", fatalStepLimit)
		note("Close: %v", db.Close())
	case "close":
		inj.armed.Store(true)
		crash = mem.CrashClone(vfs.CrashCloneCfg{})
		step("Close, with the fault", fatalStepLimit)
		err := db.Close()
		note("Close: %v", err)
		if len(inj.firedOps()) == 0 {
			return notes, errors.New("the fault never fired: the case tests nothing")
		}
		if err == nil {
			return notes, errors.New("Close returned nil although its checkpoint's index flush failed")
		}
	case "open":
		// A crash after acknowledged writes: Open replays the log into the
		// index and checkpoints, which flushes it.
		fs = mem.CrashClone(vfs.CrashCloneCfg{})
		step("Close (no fault)", fatalStepLimit)
		if err := db.Close(); err != nil {
			return notes, fmt.Errorf("close before the crash clone is opened: %w", err)
		}
		inj = newInjector(injectRule{match: fatalMatch(fault), limit: -1})
		inj.armed.Store(true)
		step("Open, with the fault", fatalStepLimit)
		db, err := heapkv.Open(faultDir, faultOptions(errorfs.Wrap(fs, inj)))
		note("Open: %v", err)
		if len(inj.firedOps()) == 0 {
			return notes, errors.New("the fault never fired: the case tests nothing")
		}
		if err == nil {
			if err := fatalLive(db, m, step, note); err != nil {
				return notes, err
			}
			step("Close", fatalStepLimit)
			note("Close: %v", db.Close())
		}
	}
	note("fault fired %d times, first %v", len(inj.firedOps()), inj.firedOps()[0])
	inj.armed.Store(false)
	if err := fatalReopen(fs, m, "reopen", step); err != nil {
		return notes, err
	}
	if crash != nil {
		if err := fatalReopen(crash, m, "reopen of the crash clone taken after the fault", step); err != nil {
			return notes, err
		}
	}
	return notes, nil
}

// fatalLive checks the live handle after the fault: a write fails with
// ErrFailed, and reads return the acknowledged value or an error.
func fatalLive(db *heapkv.DB, m kvModel, step func(string, time.Duration), note func(string, ...any)) error {
	step("write after the fault", fatalStepLimit)
	err := db.Put([]byte("after-fault"), bytes.Repeat([]byte{7}, 500))
	note("write after the fault: %v", err)
	if !errors.Is(err, heapkv.ErrFailed) {
		return fmt.Errorf("a write after the fault returned %v; want an error wrapping ErrFailed", err)
	}
	step("reads after the fault", fatalStepLimit)
	errs := 0
	for key, cands := range m {
		v, err := db.Get([]byte(key))
		switch {
		case errors.Is(err, heapkv.ErrNotFound):
			if cands[0].present {
				return fmt.Errorf("live read of %q after the fault: not found; acknowledged %v", key, cands[0])
			}
		case err != nil:
			errs++
		case !cands[0].present || !bytes.Equal(v, cands[0].val):
			return fmt.Errorf("live read of %q after the fault: %d bytes; acknowledged %v", key, len(v), cands[0])
		}
	}
	note("live reads: %d of %d keys returned an error", errs, len(m))
	return nil
}

// fatalReopen opens fs with no fault, checks every acknowledged write and
// Check, writes, and closes.
func fatalReopen(fs vfs.FS, m kvModel, label string, step func(string, time.Duration)) error {
	step(label, fatalSetup)
	db, err := heapkv.Open(faultDir, faultOptions(fs))
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	present := int64(0)
	for key, cands := range m {
		v, err := db.Get([]byte(key))
		got := kvState{present: err == nil, val: v}
		if err != nil && !errors.Is(err, heapkv.ErrNotFound) {
			db.Close()
			return fmt.Errorf("%s: Get(%q): %w", label, key, err)
		}
		if got.present != cands[0].present || !bytes.Equal(got.val, cands[0].val) {
			db.Close()
			return fmt.Errorf("%s: key %q holds %v; acknowledged %v", label, key, got, cands[0])
		}
		if got.present {
			present++
		}
	}
	rep, err := db.Check(context.Background())
	if err == nil && rep.Keys != present {
		err = fmt.Errorf("counted %d keys, want %d", rep.Keys, present)
	}
	if err != nil {
		db.Close()
		return fmt.Errorf("%s: Check: %w\n%v", label, err, rep)
	}
	if err := db.Put([]byte("after-reopen"), bytes.Repeat([]byte{9}, 700)); err != nil {
		db.Close()
		return fmt.Errorf("%s: write: %w", label, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("%s: Close: %w", label, err)
	}
	return nil
}
