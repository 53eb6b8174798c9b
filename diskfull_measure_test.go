//go:build linux

package heapkv_test

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// How big must the space reserve (Options.DiskReserve) be? This
// measurement fills a loop-mounted ext4 image through heapkv with a
// ballast file standing in for the reserve (the database's own reserve is
// off), fails the database on the full disk, then releases the ballast as
// the database releases its reserve when it sees ENOSPC, and measures with
// statfs what each step of the way back needs: Close, reopen, deleting
// three keys in five, Checkpoint, Close. It is a measurement, not a test:
//
//	sudo go test -run DiskFullSpaceNeeds -heapkv.measurereserve -v .
//
// Environment (all optional): HEAPKV_MEASURE_MEMTABLE, _CKPTLOG, _LOGSEG
// (bytes; the options of the same names, defaults 1 MiB, 4 MiB, 1 MiB),
// _INLINE (percent of writes with an inline value, default 45; the others
// are 8 KiB or, one in five, 40 KiB heap values), _INLINESIZE (bytes,
// default 100), _IMAGE and _BALLAST (MiB; defaults 128 and 48).

var measureReserve = flag.Bool("heapkv.measurereserve", false, "run TestDiskFullSpaceNeeds, the measurement of what recovering from a full disk writes")

func envInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil {
		return v
	}
	return def
}

func TestDiskFullSpaceNeeds(t *testing.T) {
	mnt := os.Getenv(dfEnvDir)
	if mnt == "" {
		if !*measureReserve {
			t.Skip("a measurement, not a test: run with -heapkv.measurereserve (as root)")
		}
		runScenarioChild(t, "TestDiskFullSpaceNeeds", dfEnvDir+"="+mountExt4(t, envInt("HEAPKV_MEASURE_IMAGE", 128)<<20))
		return
	}
	memtable := envInt("HEAPKV_MEASURE_MEMTABLE", 1<<20)
	ckptLog := envInt("HEAPKV_MEASURE_CKPTLOG", 4<<20)
	logSeg := envInt("HEAPKV_MEASURE_LOGSEG", 1<<20)
	inline := envInt("HEAPKV_MEASURE_INLINE", 45)
	inlineSize := int(envInt("HEAPKV_MEASURE_INLINESIZE", 100))
	ballastMiB := envInt("HEAPKV_MEASURE_BALLAST", 48)
	opts := dfOptions()
	opts.IndexMemTableSize, opts.CheckpointLogBytes, opts.LogSegmentSize = memtable, ckptLog, logSeg
	opts.DiskReserve = -1 // the ballast is the reserve

	r := newDFRun(t, mnt)
	t.Cleanup(childLog.summary)
	r.size = func(rng *rand.Rand) int {
		switch {
		case rng.IntN(100) < int(inline):
			return inlineSize
		case rng.IntN(5) == 0:
			return 40 << 10
		default:
			return 8 << 10
		}
	}
	r.note("options: IndexMemTableSize %d, CheckpointLogBytes %d, LogSegmentSize %d; %d%% inline writes of %d bytes; ballast %d MiB",
		memtable, ckptLog, logSeg, inline, inlineSize, ballastMiB)
	ballast := filepath.Join(mnt, "ballast")
	if err := allocateFile(ballast, ballastMiB<<20); err != nil {
		t.Fatal(err)
	}
	r.open("Open (new)", opts)
	var errs []error
	if err := r.longStep("load until a write fails", func() error {
		_, errs = r.load("k", 4, 0)
		return nil
	}); err != nil || len(errs) == 0 {
		t.Fatalf("load: %v, write errors %v", err, errs)
	}
	r.note("%d keys; first failure: %s", len(r.model), errText(errs[0]))
	// Make the disk exactly full and fail the database there, as the
	// first ENOSPC will.
	filler, err := fillTo(mnt, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.step("Checkpoint (0 blocks free)", r.db.Checkpoint); err == nil {
		t.Fatal("Checkpoint on the full disk succeeded; the measurement needs a failed database")
	}
	r.noteUsage()

	// Release the ballast, as the database releases its reserve.
	if err := errors.Join(os.Remove(ballast), os.Remove(filler)); err != nil {
		t.Fatal(err)
	}
	released := r.free()
	r.low = released
	r.note("released %d blocks (%.1f MiB)", released, float64(released*fsBlock)/(1<<20))
	// The failed database's Close may fail; here it only has to return.
	r.step("Close (failed database)", r.db.Close)
	r.open("Open", opts)
	r.verify("verify after reopening")
	var deleted int
	if err := r.longStep("Delete 3 keys in 5", func() error {
		for i, k := range r.keys() {
			if i%5 < 3 {
				if err := r.del(k); err != nil {
					return err
				}
				deleted++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.step("Checkpoint", r.db.Checkpoint); err != nil {
		t.Fatal(err)
	}
	atCkpt := r.low
	r.noteUsage()
	r.step("Close", r.db.Close)
	r.note("RESULT: Close + Open + %d deletes + Checkpoint needed %d blocks (%.2f MiB) at the lowest point; with the final Close %d blocks (%.2f MiB); %d blocks free at the end of %d released",
		deleted, released-atCkpt, float64((released-atCkpt)*fsBlock)/(1<<20),
		released-r.low, float64((released-r.low)*fsBlock)/(1<<20), r.free(), released)
}

// allocateFile makes a file of size bytes with its blocks allocated.
func allocateFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = syscall.Fallocate(int(f.Fd()), 0, 0, size)
	return errors.Join(err, f.Close())
}

// noteUsage notes the disk space the database's parts take.
func (r *dfRun) noteUsage() {
	parts := map[string]int64{}
	var total int64
	filepath.Walk(r.path, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(r.path, p)
		part := filepath.Dir(rel)
		if part == "." {
			part = rel
			if i := strings.IndexAny(part, "-0123456789"); i > 0 {
				part = part[:i]
			}
		}
		n := fi.Sys().(*syscall.Stat_t).Blocks * 512
		parts[part] += n
		total += n
		return nil
	})
	s := ""
	for _, k := range slices.Sorted(maps.Keys(parts)) {
		s += fmt.Sprintf(" %s %.2f MiB,", k, float64(parts[k])/(1<<20))
	}
	r.note("disk used by the database: %.2f MiB:%s", float64(total)/(1<<20), s)
}
