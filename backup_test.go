package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/heapkv/heapkv"
)

// contents reads every key and value of db.
func contents(t *testing.T, db *heapkv.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	var err error
	for k, v := range db.Scan(nil, &err) {
		out[string(k)] = string(v)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// backupValue is writer w's value at step i: inline, heap, or several
// heap segments' worth of blocks, by step.
func backupValue(w, i int) []byte {
	n := []int{20, 700, 9000}[i%3]
	unit := fmt.Appendf(nil, "<w%d/%d>", w, i)
	return bytes.Repeat(unit, n/len(unit)+1)[:n]
}

// checkBackupState checks that m is a state the backup writers could
// have been in at one moment: for each writer, last names its last
// step L, and its keys are exactly steps L-4..L with their values (each
// step wrote its key, moved last and deleted the key five steps back, in
// one batch).
func checkBackupState(t *testing.T, m map[string]string, writers int) {
	t.Helper()
	seen := 0
	for w := range writers {
		last, ok := m[fmt.Sprintf("w%d/last", w)]
		if !ok {
			continue // the writer had not begun
		}
		seen++
		l, err := strconv.Atoi(last)
		if err != nil {
			t.Fatalf("w%d/last = %q", w, last)
		}
		for i := max(1, l-4); i <= l; i++ {
			if v := m[fmt.Sprintf("w%d/%06d", w, i)]; v != string(backupValue(w, i)) {
				t.Fatalf("writer %d at step %d: step %d's key holds %d bytes, want its value", w, l, i, len(v))
			}
		}
		for k := range m {
			var kw, ki int
			if n, _ := fmt.Sscanf(k, "w%d/%06d", &kw, &ki); n == 2 && kw == w && (ki < l-4 || ki > l) {
				t.Fatalf("writer %d at step %d: key %s is present", w, l, k)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no writer's keys in the state")
	}
}

// A backup taken while writers run holds exactly one moment's state (the
// writers' batches whole or absent, every writer's sequence a prefix),
// opens, passes Check, and keeps going after the source is changed.
func TestBackupUnderWriters(t *testing.T) {
	root := t.TempDir()
	src := heapkv.OpenTestDB(t, root+"/src", &heapkv.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	const writers = 4
	var stop atomic.Bool
	var wg sync.WaitGroup
	var steps atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; !stop.Load(); i++ {
				b := src.NewBatch()
				b.Put(fmt.Appendf(nil, "w%d/%06d", w, i), backupValue(w, i))
				b.Put(fmt.Appendf(nil, "w%d/last", w), []byte(strconv.Itoa(i)))
				if i > 5 {
					b.Delete(fmt.Appendf(nil, "w%d/%06d", w, i-5))
				}
				if err := src.Apply(b, nil); err != nil {
					t.Error(err)
					return
				}
				steps.Add(1)
			}
		}()
	}
	for steps.Load() < 2000 {
		runtime.Gosched()
	}
	var progress []heapkv.ExportStats
	st, err := src.Backup(t.Context(), root+"/backup", &heapkv.ExportOptions{Progress: func(s heapkv.ExportStats) { progress = append(progress, s) }})
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(progress) == 0 || progress[len(progress)-1] != st {
		t.Fatalf("progress calls %v, last is not the result %+v", progress, st)
	}
	bk := heapkv.OpenTestDB(t, root+"/backup", nil)
	got := contents(t, bk)
	if int64(len(got)) != st.Entries {
		t.Fatalf("the backup holds %d keys, the export wrote %d", len(got), st.Entries)
	}
	checkBackupState(t, got, writers)
	rep, err := bk.Check(t.Context())
	if err != nil || !rep.OK() {
		t.Fatalf("check of the backup: %v %v", rep, err)
	}
	// A second backup to the same directory, which is open, is refused;
	// so is one into a directory that holds something else. The first is
	// intact.
	if _, err := src.Backup(t.Context(), root+"/backup", nil); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("backup into an open copy: %v, want ErrLocked", err)
	}
	if _, err := src.Backup(t.Context(), root+"/src", nil); !errors.Is(err, heapkv.ErrInvalidOptions) {
		t.Fatalf("backup into a directory that is not a backup: %v, want ErrInvalidOptions", err)
	}
	if again := contents(t, bk); len(again) != len(got) {
		t.Fatal("a refused backup changed the existing one")
	}
}

// An export imports into databases made with other options (block size,
// inline threshold, compression) with the same contents, and exports from
// them are the same entries byte for byte.
func TestExportImportAcrossOptions(t *testing.T) {
	root := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	// Unsynced puts: a synced Put waits for the disk each time.
	src := heapkv.OpenTestDB(t, root+"/src", &heapkv.Options{Logger: quiet, NoSync: true})
	rng := rand.New(rand.NewPCG(5, 6))
	n := 3000
	if heapkv.RaceEnabled {
		n = 700 // compression is many times slower under the race detector
	}
	for i := range n {
		v := make([]byte, []int{0, 1, 100, 257, 3000, 4100, 70000}[i%7])
		for j := range v {
			v[j] = byte(rng.IntN(4)) // compressible
		}
		if err := src.Put(fmt.Appendf(nil, "key-%05d", rng.IntN(1000000)), v); err != nil {
			t.Fatal(err)
		}
	}
	want := contents(t, src)
	var dumpA bytes.Buffer
	st, err := src.Export(t.Context(), &dumpA, nil)
	if err != nil || st.Entries != int64(len(want)) {
		t.Fatalf("export: %+v %v (%d keys)", st, err, len(want))
	}
	for i, o := range []heapkv.Options{
		{BlockSize: 4096, InlineThreshold: 2048},
		{BlockSize: 512, InlineThreshold: 64, Compression: heapkv.CodecZstd},
		{Compression: heapkv.CodecS2, InlineThreshold: -1},
	} {
		o.Logger = quiet
		dir := fmt.Sprintf("%s/import%d", root, i)
		ist, err := heapkv.Import(t.Context(), dir, bytes.NewReader(dumpA.Bytes()), &o)
		if err != nil || ist.Entries != st.Entries || ist.Bytes != st.Bytes || ist.LSN != st.LSN {
			t.Fatalf("import %d: %+v %v, exported %+v", i, ist, err, st)
		}
		if _, err := vfs.Default.Stat(dir + "/RESERVE"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("import %d carries a space reserve (%v)", i, err)
		}
		db := heapkv.OpenTestDB(t, dir, &o)
		got := contents(t, db)
		if len(got) != len(want) {
			t.Fatalf("import %d holds %d keys, want %d", i, len(got), len(want))
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("import %d: %s differs", i, k)
			}
		}
		var dumpB bytes.Buffer
		if _, err := db.Export(t.Context(), &dumpB, nil); err != nil {
			t.Fatal(err)
		}
		const hdr = 28 // the header holds the LSN, which differs
		if !bytes.Equal(dumpA.Bytes()[hdr:], dumpB.Bytes()[hdr:]) {
			t.Fatalf("import %d exports other bytes than it imported", i)
		}
	}
}

// A damaged or cut dump fails with ErrBadDump and leaves no directory;
// so does a cancelled import.
func TestImportBadDumpLeavesNothing(t *testing.T) {
	root := t.TempDir()
	src := heapkv.OpenTestDB(t, root+"/src", &heapkv.Options{Logger: slog.New(slog.DiscardHandler)})
	for i := range 500 {
		if err := src.Put(fmt.Appendf(nil, "k%04d", i), bytes.Repeat([]byte{byte(i)}, 300)); err != nil {
			t.Fatal(err)
		}
	}
	var good bytes.Buffer
	if _, err := src.Export(t.Context(), &good, nil); err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good.Bytes())
	flipped[len(flipped)/2] ^= 4
	for name, b := range map[string][]byte{
		"cut":     good.Bytes()[:good.Len()*2/3],
		"flipped": flipped,
		"empty":   nil,
		"foreign": []byte("not a dump at all, but long enough to have a header"),
	} {
		dir := root + "/" + name
		if _, err := heapkv.Import(t.Context(), dir, bytes.NewReader(b), nil); !errors.Is(err, heapkv.ErrBadDump) {
			t.Fatalf("%s dump: %v, want ErrBadDump", name, err)
		}
		for _, p := range []string{dir, dir + ".partial"} {
			if _, err := vfs.Default.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s dump: %s exists after the failed import (%v)", name, p, err)
			}
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := heapkv.Import(ctx, root+"/cancelled", bytes.NewReader(good.Bytes()), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled import: %v", err)
	}
	if _, err := vfs.Default.Stat(root + "/cancelled"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a cancelled import left its directory")
	}
}

// A machine crash at any moment of a backup leaves the source with every
// acknowledged write and the destination absent or complete: never a
// database that opens with part of the data.
func TestBackupCrash(t *testing.T) {
	e := newMirrorEnv(t, 1)
	db := e.open()
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%03d", i)
		e.put(db, keys[i])
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	var clones []*vfs.MemFS
	done := make(chan error, 1)
	go func() {
		// Paced (about 0.3 s), so that the clones fall all through it.
		_, err := db.Backup(t.Context(), "backup", &heapkv.ExportOptions{BytesPerSecond: 2 << 20})
		done <- err
	}()
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		default:
			if len(clones) < 60 {
				clones = append(clones, e.crashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(len(clones)), 1))}))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	clones = append(clones, e.crashClone(vfs.CrashCloneCfg{}))
	mustClose(t, db)
	complete, absent := 0, 0
	for i, mem := range clones {
		o := e.options()
		heapkv.SetFS(o, mem)
		if _, err := mem.Stat("backup"); err != nil {
			absent++
		} else {
			complete++
			bk, err := heapkv.Open("backup", o)
			if err != nil {
				t.Fatalf("clone %d: the backup exists and does not open: %v", i, err)
			}
			got := contents(t, bk)
			for _, k := range keys {
				if got[k] != string(e.model[k]) {
					t.Fatalf("clone %d: the backup lacks %s", i, k)
				}
			}
			if len(got) != len(keys) {
				t.Fatalf("clone %d: the backup holds %d keys, want %d", i, len(got), len(keys))
			}
			mustClose(t, bk)
		}
		src, err := heapkv.Open(mdbDir, o)
		if err != nil {
			t.Fatalf("clone %d: the source does not open: %v", i, err)
		}
		if got := contents(t, src); len(got) != len(keys) {
			t.Fatalf("clone %d: the source holds %d keys, want %d", i, len(got), len(keys))
		}
		mustClose(t, src)
	}
	t.Logf("clones: %d with the backup complete, %d without it", complete, absent)
	if complete == 0 || absent == 0 {
		t.Fatal("the clones did not fall both before and after the backup's end")
	}
}
