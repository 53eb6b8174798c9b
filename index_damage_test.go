package heapkv_test

// Damaged index files (issue 11, index fault item 1). A small database (the
// fixture: index_fixture_test.go) is copied; one of its index files (a
// table, Pebble's MANIFEST, OPTIONS, or a marker file) is damaged; the copy
// is opened, every key read (Get), Check run, the whole index compacted, a
// write made, every key read again (a scan), and the copy closed. Every trial must end
// with the data exactly as written and Check passing, or with the damage
// reported as an error wrapping ErrCorrupt. Failures:
//
//   - silent: a read returned a wrong value, or ErrNotFound for a key that
//     exists (or a value for one deleted), or Check passed counting the
//     wrong number of keys, and nothing in the trial returned ErrCorrupt;
//   - unclassified: an error that does not wrap ErrCorrupt (Open, Get,
//     Check, the write, Close), or a failed compaction after which a write
//     did not return ErrCorrupt (Pebble's DataCorruption and BackgroundError
//     put the database in its failed state, naming corruption);
//   - panic, hang: seen by the parent (each trial runs in a child process;
//     index_child_test.go).
//
// Accepted: ok (no damage visible), refused (Open returned ErrCorrupt),
// detected (ErrCorrupt later, no wrong read), late (a wrong read, and
// ErrCorrupt somewhere in the same trial: the stated criterion accepts it,
// the count is reported; -heapkv.indexdamagestrict fails it too).
//
//	go test -race -run 'TestIndexDamage|TestIndexManifestTornTail' -count=1 .
//	go test -run TestIndexDamage -count=1 -timeout 0 -heapkv.indexdamage=5000 .
//	go test -run TestIndexDamage -count=1 -heapkv.indexdamageseed=S -heapkv.indexdamagetrial=K -v .

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv"
)

var (
	indexDamageTrials  = flag.Int("heapkv.indexdamage", 200, "index damage test: damaged copies to try")
	indexDamageSeed    = flag.Uint64("heapkv.indexdamageseed", 0, "index damage test: seed (0: from the clock)")
	indexDamageOne     = flag.Int("heapkv.indexdamagetrial", -1, "index damage test: run only this trial")
	indexDamageFixture = flag.String("heapkv.indexdamagefixture", "",
		"index damage test: keep the fixture in this directory (reused if present), for an exact replay")
	indexDamageStrict = flag.Bool("heapkv.indexdamagestrict", false,
		"index damage test: also fail trials that read a wrong value before ErrCorrupt surfaced (late)")
)

const (
	idEnvFixture = "HEAPKV_INDEXDAMAGE_FIXTURE"
	idEnvSeed    = "HEAPKV_INDEXDAMAGE_SEED"
	idEnvTrials  = "HEAPKV_INDEXDAMAGE_TRIALS"
	idPrefix     = "indexdamage: "
	idTrialLimit = 30 * time.Second // a trial running longer is a hang
)

// idOutcome is how a trial ended.
type idOutcome struct {
	trial  string
	class  string // ok refused detected late | silent unclassified panic hang crash
	damage string
	detail string
}

func (o idOutcome) failed() bool {
	switch o.class {
	case "ok", "refused", "detected":
		return false
	case "late":
		return *indexDamageStrict
	}
	return true
}

// TestIndexDamage runs the control (an undamaged copy) and
// -heapkv.indexdamage damaged copies.
func TestIndexDamage(t *testing.T) {
	seed := *indexDamageSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	trials := []string{"control"}
	if *indexDamageOne >= 0 {
		trials = append(trials, strconv.Itoa(*indexDamageOne))
	} else {
		n := *indexDamageTrials
		if heapkv.RaceEnabled && !flagSet("heapkv.indexdamage") {
			n = 40 // each trial is a child process: many times slower under the race detector
		}
		for i := range n {
			trials = append(trials, strconv.Itoa(i))
		}
	}
	dir := indexDamageFixtureDir(t)
	start := time.Now()
	outs := runDamageTrials(t, dir, seed, trials)
	counts := map[string]int{}
	byKind := map[string]map[string]int{}
	var failed []idOutcome
	for _, o := range outs {
		if o.trial == "control" {
			if o.class != "ok" {
				t.Errorf("the undamaged copy: %s: %s", o.class, o.detail)
			}
			continue
		}
		if testing.Verbose() {
			t.Logf("trial %s: %s: %s: %s", o.trial, o.class, o.damage, headString(o.detail, 400))
		}
		counts[o.class]++
		if o.class == "panic" {
			if strings.Contains(o.detail, "on a Pebble goroutine") {
				counts["panic on a Pebble goroutine"]++
			} else {
				counts["panic in the caller"]++
			}
		}
		kind, _, _ := strings.Cut(o.damage, " ")
		if byKind[kind] == nil {
			byKind[kind] = map[string]int{}
		}
		byKind[kind][o.class]++
		if o.failed() {
			failed = append(failed, o)
		}
	}
	t.Logf("seed %d: %d damaged copies in %v: %v; by file kind: %v", seed, len(outs)-1,
		time.Since(start).Round(time.Millisecond), counts, byKind)
	dumps := 0
	for i, o := range failed {
		if i == 25 {
			t.Errorf("... %d more failed trials", len(failed)-i)
			break
		}
		detail := o.detail
		if o.class == "hang" {
			if dumps < 3 {
				dumps++
			} else {
				detail = tailString(detail, 2000)
			}
		}
		t.Errorf("trial %s (%s): %s\n  %s", o.trial, o.damage, o.class, detail)
	}
	if len(failed) > 0 {
		t.Errorf("seed %d: %d of %d damaged copies failed (%v); replay one with -heapkv.indexdamageseed=%d -heapkv.indexdamagetrial=K",
			seed, len(failed), len(outs)-1, counts, seed)
	}
}

// TestIndexManifestTornTail zeroes the end of the record of the index's
// MANIFEST that logged the last flush (the checkpoint marker's ingestion
// follows it). Pebble reads that as a torn tail and opens without the last
// flush's table; heapkv's checkpoint
// is past that flush, so nothing replays its writes. Open must refuse the
// copy with ErrCorrupt.
func TestIndexManifestTornTail(t *testing.T) {
	dir := indexDamageFixtureDir(t)
	files, err := readFixtureDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The damage works as intended: Pebble alone, read-only, opens the
	// damaged copy without the last flush's table.
	d, err := tornTailDamage(files)
	if err != nil {
		t.Fatal(err)
	}
	added := fmt.Sprintf("k%05d", damageKeys+damageKeys/12) // by round 3
	if !pebbleHas(t, files, added) {
		t.Fatalf("the undamaged index has no %s", added)
	}
	damaged := maps.Clone(files)
	d.apply(damaged)
	if pebbleHas(t, damaged, added) {
		t.Fatalf("%s: Pebble still reads the last flush's table", d.desc)
	}
	outs := runDamageTrials(t, dir, 1, []string{"torn-tail"})
	o := outs[0]
	t.Logf("%s: %s: %s", o.damage, o.class, o.detail)
	if o.class != "refused" {
		t.Fatalf("%s: %s (above); want Open to fail with ErrCorrupt", o.damage, o.class)
	}
}

// pebbleHas opens the index in files read-only with Pebble alone and
// reports whether it holds key.
func pebbleHas(t *testing.T, files map[string][]byte, key string) bool {
	t.Helper()
	mem, err := fixtureFS(files)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pebble.Open(damageIndexDir, &pebble.Options{FS: mem, ReadOnly: true, Logger: quietPebbleLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, closer, err := p.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	closer.Close()
	return true
}

type quietPebbleLogger struct{}

func (quietPebbleLogger) Infof(string, ...any)  {}
func (quietPebbleLogger) Errorf(string, ...any) {}
func (quietPebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// indexDamageFixtureDir builds the fixture and stores it on disk, or reuses
// the one in -heapkv.indexdamagefixture.
func indexDamageFixtureDir(t *testing.T) string {
	t.Helper()
	dir := *indexDamageFixture
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, damageDir)); err == nil {
			t.Logf("reusing the fixture in %s", dir)
			return dir
		}
	} else {
		dir = t.TempDir()
	}
	files := buildDamageFixture(t)
	// As designed (damageRounds): a bottom-level table and three L0 tables
	// (no automatic compaction ran) plus the checkpoint markers' small
	// ingested tables, the MANIFEST of the first session (obsolete) and of
	// the second, OPTIONS, and two markers.
	byKind := indexFiles(files)
	if len(byKind["table"]) < 4 || len(byKind["manifest"]) != 2 || len(byKind["options"]) != 1 || len(byKind["marker"]) != 2 {
		t.Fatalf("the fixture's index is not as designed: %s", describeIndex(files))
	}
	writeFixtureDir(t, dir, files)
	t.Logf("fixture: %d keys; %s", len(newDamageModel().keys), describeIndex(files))
	return dir
}

// idChildren is how many child processes run trials at once: a trial
// spends part of its time waiting (Close), so two keep two cores busy.
const idChildren = 2

// runDamageTrials runs trials in child processes (idChildren at a time,
// each taking every idChildren-th trial; a new child after each one that
// dies) and returns their outcomes in the order of trials.
func runDamageTrials(t *testing.T, dir string, seed uint64, trials []string) []idOutcome {
	t.Helper()
	type shard struct {
		outs []idOutcome
		errs []string
	}
	shards := make([]shard, min(idChildren, len(trials)))
	var wg sync.WaitGroup
	for w := range shards {
		var mine []string
		for i := w; i < len(trials); i += len(shards) {
			mine = append(mine, trials[i])
		}
		wg.Go(func() { shards[w].outs, shards[w].errs = runDamageShard(dir, seed, mine) })
	}
	wg.Wait()
	var outs []idOutcome
	for i := range trials {
		sh := &shards[i%len(shards)]
		if len(sh.outs) == 0 {
			break
		}
		outs = append(outs, sh.outs[0])
		sh.outs = sh.outs[1:]
	}
	for _, sh := range shards {
		for _, e := range sh.errs {
			t.Error(e)
		}
	}
	if len(outs) < len(trials) {
		t.Fatalf("only %d of %d trials ran", len(outs), len(trials))
	}
	return outs
}

// runDamageShard runs trials, in order, in as many children as it takes.
func runDamageShard(dir string, seed uint64, trials []string) (outs []idOutcome, errs []string) {
	for next := 0; next < len(trials); {
		run := runTrialChild("TestIndexDamageChild", idPrefix, []string{
			idEnvFixture + "=" + dir,
			idEnvSeed + "=" + strconv.FormatUint(seed, 10),
			idEnvTrials + "=" + strings.Join(trials[next:], ","),
		}, idTrialLimit+30*time.Second)
		started, damage, hung, progress := "", "", false, false
		for _, l := range run.lines {
			// "start <trial> <damage, quoted>", "end <trial> <class>
			// <detail, quoted>", "hang <trial>".
			verb, rest, _ := strings.Cut(l, " ")
			trial, rest, _ := strings.Cut(rest, " ")
			switch verb {
			case "start":
				started, progress = trial, true
				damage, _ = strconv.Unquote(rest)
			case "end":
				if trial != started || trial != trials[next] {
					return outs, append(errs, fmt.Sprintf("child: %q; trial %s started, %s expected", l, started, trials[next]))
				}
				class, quoted, _ := strings.Cut(rest, " ")
				detail, _ := strconv.Unquote(quoted)
				outs = append(outs, idOutcome{trial: trial, class: class, damage: damage, detail: detail})
				started = ""
				next++
			case "hang":
				hung = true
			}
		}
		if !progress {
			return outs, append(errs, fmt.Sprintf("a child started no trial: %v\n%s", run.err, tailString(run.stderr, 4000)))
		}
		if started == "" {
			if run.err != nil {
				errs = append(errs, fmt.Sprintf("child exited with %v after its trials:\n%s", run.err, tailString(run.stderr, 4000)))
			}
			continue
		}
		o := idOutcome{trial: started, damage: damage, class: "crash"}
		switch ps := panicSummary(run.stderr); {
		case hung:
			o.class, o.detail = "hang", goroutineDump(run.stderr)
		case ps != "":
			o.class, o.detail = "panic", ps
		default:
			o.detail = fmt.Sprintf("%v\n%s", run.err, tailString(run.stderr, 4000))
		}
		outs = append(outs, o)
		next++
	}
	return outs, errs
}

// TestIndexDamageChild runs the trials its parent names and reports each.
func TestIndexDamageChild(t *testing.T) {
	dir := os.Getenv(idEnvFixture)
	if dir == "" {
		t.Skip("child of TestIndexDamage only")
	}
	seed, err := strconv.ParseUint(os.Getenv(idEnvSeed), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	files, err := readFixtureDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	model := newDamageModel()
	for _, trial := range strings.Split(os.Getenv(idEnvTrials), ",") {
		var d indexDamage
		switch trial {
		case "control":
			d = indexDamage{desc: "none (control)", apply: func(map[string][]byte) {}}
		case "torn-tail":
			if d, err = tornTailDamage(files); err != nil {
				t.Fatal(err)
			}
		default:
			i, err := strconv.Atoi(trial)
			if err != nil {
				t.Fatal(err)
			}
			d = randomDamage(files, seed, i)
		}
		fmt.Printf("%sstart %s %q\n", idPrefix, trial, d.desc)
		wd := startWatchdog(idPrefix, trial, idTrialLimit)
		class, detail := runDamageTrial(files, model, d)
		wd.Stop()
		fmt.Printf("%send %s %s %q\n", idPrefix, trial, class, detail)
	}
}

// runDamageTrial opens a damaged copy and returns the trial's class and
// what it saw.
func runDamageTrial(files map[string][]byte, model *damageModel, d indexDamage) (class, detail string) {
	copyFiles := maps.Clone(files)
	d.apply(copyFiles)
	fs, err := fixtureFS(copyFiles)
	if err != nil {
		return "crash", "copying the fixture: " + err.Error()
	}
	var (
		notes        []string // what the trial saw, in order
		corrupt      bool     // something returned ErrCorrupt
		wrong        bool     // a read was wrong
		unclassified bool     // an error did not wrap ErrCorrupt
	)
	note := func(format string, args ...any) {
		if len(notes) < 12 {
			notes = append(notes, fmt.Sprintf(format, args...))
		}
	}
	// sawErr notes an error from step: ErrCorrupt, or (with failedOK, once
	// corruption was reported) ErrFailed, is accepted.
	sawErr := func(step string, err error, failedOK bool) {
		switch {
		case errors.Is(err, heapkv.ErrCorrupt):
			corrupt = true
			note("%s: ErrCorrupt: %v", step, err)
		case failedOK && corrupt && errors.Is(err, heapkv.ErrFailed):
			note("%s: ErrFailed: %v", step, err)
		default:
			unclassified = true
			note("%s: error not wrapping ErrCorrupt: %v", step, err)
		}
	}
	verdict := func() (string, string) {
		class := "ok"
		switch {
		case wrong && !corrupt:
			class = "silent"
		case unclassified:
			class = "unclassified"
		case wrong:
			class = "late"
		case corrupt:
			class = "detected"
		}
		return class, strings.Join(notes, "; ")
	}

	db, err := heapkv.Open(damageDir, damageOptions(fs))
	if err != nil {
		if errors.Is(err, heapkv.ErrCorrupt) {
			return "refused", "Open: " + err.Error()
		}
		return "unclassified", "Open: error not wrapping ErrCorrupt: " + err.Error()
	}
	readAll := func(phase string) {
		bad, errs := 0, 0
		for _, k := range model.keys {
			want := model.vals[k]
			v, err := db.Get([]byte(k))
			switch {
			case err == nil && want != nil && bytes.Equal(v, want):
			case errors.Is(err, heapkv.ErrNotFound) && want == nil:
			case err == nil || errors.Is(err, heapkv.ErrNotFound):
				wrong = true
				if bad++; bad <= 2 {
					note("%s: Get(%s) = %d bytes, %v; want %d bytes (present %v)", phase, k, len(v), err, len(want), want != nil)
				}
			default:
				if errs++; errs <= 2 || !errors.Is(err, heapkv.ErrCorrupt) {
					sawErr(fmt.Sprintf("%s: Get(%s)", phase, k), err, false)
				}
			}
		}
		if bad > 2 || errs > 2 {
			note("%s: %d wrong reads, %d errors of %d keys", phase, bad, errs, len(model.keys))
		}
	}
	readAll("read")
	probe, probeVal, probeOK := []byte("zz-probe"), bytes.Repeat([]byte{0x5A}, 300), false
	// scanAll reads every key with an iterator (cheaper than a Get each:
	// under invariants Pebble records a stack per table a Get opens).
	scanAll := func(phase string) {
		it, err := db.NewIter(nil)
		if err != nil {
			sawErr(phase+": NewIter", err, false)
			return
		}
		seen := map[string]bool{}
		bad, stopped := 0, false
		for ok := it.First(); ok; ok = it.Next() {
			k, v, err := it.KeyValue()
			key := string(k)
			seen[key] = true
			if err != nil {
				sawErr(fmt.Sprintf("%s: value of %s", phase, key), err, false)
				continue
			}
			want, known := model.vals[key]
			if key == string(probe) {
				want, known = probeVal, probeOK
				if !probeOK {
					continue // a failed write may or may not show
				}
			}
			if !known || want == nil || !bytes.Equal(v, want) {
				wrong = true
				if bad++; bad <= 2 {
					note("%s: key %s holds %d bytes; want %d bytes (present %v)", phase, key, len(v), len(want), want != nil)
				}
			}
		}
		if err := it.Error(); err != nil {
			sawErr(phase+": iterator", err, false)
			stopped = true
		}
		if err := it.Close(); err != nil && !stopped {
			sawErr(phase+": iterator close", err, false)
			stopped = true
		}
		if stopped {
			return
		}
		if probeOK && !seen[string(probe)] {
			wrong = true
			note("%s: the acknowledged write of %s is missing", phase, probe)
		}
		for _, k := range model.keys {
			if model.vals[k] != nil && !seen[k] {
				wrong = true
				if bad++; bad <= 2 {
					note("%s: key %s is missing", phase, k)
				}
			}
		}
		if bad > 2 {
			note("%s: %d keys wrong", phase, bad)
		}
	}
	switch rep, err := db.Check(context.Background()); {
	case err != nil:
		sawErr("Check", err, false)
	case rep.Keys != model.present():
		wrong = true
		note("Check passed counting %d keys; %d exist", rep.Keys, model.present())
	}
	cerr := heapkv.CompactIndex(db)
	if cerr != nil {
		note("compaction: %v", cerr)
		if errors.Is(cerr, heapkv.ErrCorrupt) {
			corrupt = true
		}
	}
	perr := db.Put(probe, probeVal)
	probeOK = perr == nil
	switch {
	case perr == nil && cerr != nil:
		unclassified = true
		note("a write after the failed compaction succeeded")
	case perr == nil:
	case cerr != nil && !errors.Is(perr, heapkv.ErrCorrupt):
		unclassified = true
		note("write after the failed compaction: %v; want ErrCorrupt", perr)
	default:
		sawErr("write", perr, true)
	}
	scanAll("scan after compaction")
	if err := db.Close(); err != nil {
		sawErr("Close", err, true)
	}
	return verdict()
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
