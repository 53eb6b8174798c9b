package mirror

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// wbCall is one write-back call on a replica's file: regions first to
// last.
type wbCall struct {
	file        vfs.File
	first, last int64
}

// hookWriteBack replaces writeBackFile for the test: it records every call
// and fails those on files for which fail returns true.
func hookWriteBack(t *testing.T, fail func(vfs.File) bool) *[]wbCall {
	var mu sync.Mutex
	calls := &[]wbCall{}
	old := writeBackFile
	writeBackFile = func(f vfs.File, off, n int64) error {
		if n <= 0 || n%wbRegionBytes != 0 || off%wbRegionBytes != 0 || n > wbMaxSpan*wbRegionBytes {
			t.Errorf("write-back of [%d, +%d): not whole regions, or more than wbMaxSpan", off, n)
		}
		mu.Lock()
		*calls = append(*calls, wbCall{f, off / wbRegionBytes, (off+n)/wbRegionBytes - 1})
		mu.Unlock()
		if fail != nil && fail(f) {
			return errInjectedWriteBack
		}
		return nil
	}
	t.Cleanup(func() { writeBackFile = old })
	return calls
}

// callsOf returns the calls on each file that calls touched, as [first,
// last] pairs in call order.
func callsOf(calls []wbCall) map[vfs.File][][2]int64 {
	out := map[vfs.File][][2]int64{}
	for _, c := range calls {
		out[c.file] = append(out[c.file], [2]int64{c.first, c.last})
	}
	return out
}

// onlyFileCalls returns the calls of a one-replica set, failing the test if
// they touched another number of files.
func onlyFileCalls(t *testing.T, calls []wbCall) [][2]int64 {
	t.Helper()
	per := callsOf(calls)
	if len(per) != 1 {
		t.Fatalf("write-back touched %d files, want the one replica's", len(per))
	}
	for _, cs := range per {
		return cs
	}
	return nil
}

var errInjectedWriteBack = errors.New("injected write-back error")

// failWriteBackOf makes every write-back of the file of the i-th writable
// replica fail from now on.
func failWriteBackOf(t *testing.T, f *fixture, i int) {
	bad := f.set.view.Load().writable[i].f
	hookWriteBack(t, func(file vfs.File) bool { return file == bad })
}

// blockAt returns the block that starts at file offset off (rounded up).
func (f *fixture) blockAt(off int64) uint64 {
	return uint64((off - f.set.headerBytes + testBS - 1) / testBS)
}

// WriteBack writes back the regions written since the last one, in file
// order, on every writable replica: a few small writes, in regions close
// together, in one call from the first region to the last.
func TestWriteBackRegions(t *testing.T) {
	f := newFixture(t, 2)
	calls := hookWriteBack(t, nil)
	f.mustWrite(f.blockAt(3*wbRegionBytes+4096), 2, 1)
	f.mustWrite(f.blockAt(0), 1, 2)
	f.mustWrite(f.blockAt(3*wbRegionBytes), 1, 3)
	f.mustWrite(f.blockAt(6*wbRegionBytes)-1, 2, 4) // spans regions 5 and 6
	f.set.WriteBack()
	per := callsOf(*calls)
	if len(per) != 2 {
		t.Fatalf("write-back touched %d files, want both replicas'", len(per))
	}
	for _, cs := range per {
		if want := [][2]int64{{0, 6}}; !slices.Equal(cs, want) {
			t.Fatalf("write-back calls %v, want %v", cs, want)
		}
	}
	*calls = nil
	f.set.WriteBack()
	if len(*calls) != 0 {
		t.Fatalf("a second WriteBack with no writes between wrote back %v", *calls)
	}
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	f.checkReplicas(0, 1)
}

// A batch holds at most wbRegionBytes of written bytes and spans at most
// wbMaxSpan regions: full regions are written back one call each, sparse
// ones many to a call, a full region among sparse ones ends their batch,
// and a region is never split.
func TestWriteBackBatches(t *testing.T) {
	f := newFixture(t, 1)
	calls := hookWriteBack(t, nil)
	full := int(wbRegionBytes / testBS)
	// Regions 0-2 full; 3-70 one block each (68 regions: two batches,
	// split by span); 71 full; 72-73 one block each; 140 and 190 one block
	// each (close enough for one call, too far from 72); 140+wbMaxSpan one
	// block (too far).
	for r := range int64(3) {
		f.mustWrite(f.blockAt(r*wbRegionBytes), full, uint64(r))
	}
	for r := int64(3); r <= 70; r++ {
		f.mustWrite(f.blockAt(r*wbRegionBytes), 1, uint64(r))
	}
	f.mustWrite(f.blockAt(71*wbRegionBytes), full, 71)
	for _, r := range []int64{72, 73, 140, 190, 140 + wbMaxSpan} {
		f.mustWrite(f.blockAt(r*wbRegionBytes), 1, uint64(r))
	}
	f.set.WriteBack()
	got := onlyFileCalls(t, *calls)
	want := [][2]int64{{0, 0}, {1, 1}, {2, 2}, {3, 3 + wbMaxSpan - 1}, {3 + wbMaxSpan, 70}, {71, 71}, {72, 73}, {140, 190}, {140 + wbMaxSpan, 140 + wbMaxSpan}}
	if !slices.Equal(got, want) {
		t.Fatalf("write-back calls %v, want %v", got, want)
	}
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	f.checkReplicas(0)

	// Sparse regions whose bytes add up past wbRegionBytes: a batch ends
	// before the region that would take it over.
	*calls = nil
	quarter := full / 4
	for r := int64(0); r < 10; r++ {
		f.mustWrite(f.blockAt(r*wbRegionBytes), quarter, uint64(1000+r))
	}
	f.set.WriteBack()
	got = onlyFileCalls(t, *calls)
	if want := [][2]int64{{0, 3}, {4, 7}, {8, 9}}; !slices.Equal(got, want) {
		t.Fatalf("write-back calls of quarter-full regions %v, want %v", got, want)
	}
}

// A write-back error, which the file's next fsync would no longer report,
// is reported by the next Sync as that replica's failed flush: the replica
// goes stale with the blocks written since its last sync marked, as for a
// failed fsync (TestSyncErrorGoesStale); the last in-sync replica fails the
// Sync instead.
func TestWriteBackErrorReportedBySync(t *testing.T) {
	f := newFixture(t, 2)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	failWriteBackOf(t, f, 0)
	f.mustWrite(0, 4, 1)
	f.set.WriteBack()
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	st := f.status(0)
	mustState(t, st, Stale)
	if st.Marked != 4 {
		t.Fatalf("marked %d, want the 4 blocks written since the last sync", st.Marked)
	}
	mustState(t, f.status(1), InSync)

	failWriteBackOf(t, f, 0) // now replica 1's file, the only writable one
	f.mustWrite(8, 1, 2)
	f.set.WriteBack()
	if err := f.set.Sync(); !errors.Is(err, errInjectedWriteBack) {
		t.Fatalf("Sync of the last replica after its write-back failed: %v", err)
	}
	mustState(t, f.status(1), InSync)
	if err := f.set.Sync(); err != nil {
		t.Fatalf("a Sync reports a write-back error once: %v", err)
	}
}

// Detach flushes the replica itself before it goes stale: a write-back
// error counts as a failed flush there too, so the blocks written since the
// last sync are marked for the next resync.
func TestWriteBackErrorBeforeDetach(t *testing.T) {
	f := newFixture(t, 2)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	failWriteBackOf(t, f, 1)
	f.mustWrite(0, 3, 1)
	f.set.WriteBack()
	if err := f.set.Detach(1, f.curLSN()); err != nil {
		t.Fatal(err)
	}
	if st := f.status(1); st.Marked != 3 {
		t.Fatalf("detached after a failed write-back with %d blocks marked, want 3", st.Marked)
	}
}

// On a real file the write-back runs (sync_file_range where there is one)
// and leaves no error for the Sync.
func TestWriteBackRealFile(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{FS: vfs.Default, DBID: testID, BlockSize: testBS, Logger: slog.New(slog.DiscardHandler)}
	s, err := Create(cfg, []string{filepath.Join(dir, "heap")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 64 {
		if err := s.WriteAt(block(uint64(i*997), 1), uint64(i*997)); err != nil {
			t.Fatal(err)
		}
	}
	s.WriteBack()
	if err := s.view.Load().writable[0].r.wbErr; err != nil {
		t.Fatalf("write-back of a real file: %v", err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}

// StartWriteBack starts the write-back of exactly the blocks given, on every
// writable replica, and waits for nothing; on a real file the call goes
// through.
func TestStartWriteBack(t *testing.T) {
	f := newFixture(t, 2)
	type call struct {
		file   vfs.File
		off, n int64
	}
	var calls []call
	old := startWriteBackFile
	startWriteBackFile = func(file vfs.File, off, n int64) { calls = append(calls, call{file, off, n}) }
	t.Cleanup(func() { startWriteBackFile = old })
	f.mustWrite(10, 3, 1)
	f.set.StartWriteBack(10, 3)
	f.set.StartWriteBack(20, 0)
	if len(calls) != 2 || calls[0].file == calls[1].file {
		t.Fatalf("calls %+v, want one per replica", calls)
	}
	for _, c := range calls {
		if c.off != f.set.offset(10) || c.n != 3*testBS {
			t.Fatalf("write-back of [%d, +%d), want [%d, +%d)", c.off, c.n, f.set.offset(10), 3*testBS)
		}
	}
	if got := f.set.WriteBacksStarted(); got != 1 {
		t.Fatalf("WriteBacksStarted %d, want 1", got)
	}
	startWriteBackFile = old

	s, err := Create(Config{FS: vfs.Default, DBID: testID, BlockSize: testBS, Logger: slog.New(slog.DiscardHandler)},
		[]string{filepath.Join(t.TempDir(), "heap")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WriteAt(block(5, 1), 5); err != nil {
		t.Fatal(err)
	}
	s.StartWriteBack(5, 1)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}

// A write-back error on a replica that is being resynced counts, when the
// resync stops, as writes it lost: abortResync marks the blocks written
// since its last sync again, as Detach does
// (TestWriteBackErrorBeforeDetach). Without the error they stay unmarked.
func TestWriteBackErrorBeforeResyncStops(t *testing.T) {
	for _, failing := range []bool{false, true} {
		f := newFixture(t, 2)
		if err := f.set.Detach(1, f.curLSN()); err != nil {
			t.Fatal(err)
		}
		const n = 8192 // 4 MiB of missed blocks: four stripe units, seconds at the rate below
		for b := uint64(0); b < n; b += 4 {
			f.mustWrite(b, 4, 1)
		}
		if _, err := f.set.Reopen(1); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			_, err := f.set.Resync(ctx, 1, ResyncOptions{Allocated: f.allocated, Rate: 1 << 20})
			done <- err
		}()
		for f.status(1).State != Resyncing {
			select {
			case err := <-done:
				t.Fatalf("the resync ended before it began copying: %v", err)
			case <-time.After(100 * time.Microsecond):
			}
		}
		if failing {
			failWriteBackOf(t, f, 1)
		}
		const b = 20000 // past what the resync copies
		f.mustWrite(b, 3, 2)
		f.set.WriteBack()
		cancel()
		if err := <-done; err == nil {
			t.Fatal("the resync finished before it was cancelled")
		}
		st := f.status(1)
		mustState(t, st, Stale)
		r := f.set.replicas[1]
		f.set.mu.Lock()
		marked := r.track.Test(b) && r.track.Test(b+2) && !r.synced.Test(b+1)
		f.set.mu.Unlock()
		if marked != failing {
			t.Fatalf("write-back failed %v: blocks written during the resync marked %v (status %+v)", failing, marked, st)
		}
	}
}

// The region counts lose no note while writers note regions beyond its
// length (so that it grows) and WriteBack takes it concurrently, and each
// take is in file order.
func TestWriteBackRegionSetConcurrent(t *testing.T) {
	var w wbState
	const writers, notes = 4, 5000
	noted := make([]map[int64]bool, writers)
	var wg sync.WaitGroup
	for g := range writers {
		noted[g] = map[int64]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range notes {
				// Regions spread further as i grows: the counters grow
				// several times while the others note and take.
				r := int64((i*7919 + g*104729) % (64 + i*8))
				n := int64(1 + i%3) // one to three regions
				w.note(r*wbRegionBytes+int64(i%4096), (n-1)*wbRegionBytes+1)
				for k := range n {
					noted[g][r+k] = true
				}
			}
		}()
	}
	taken := map[int64]bool{}
	collect := func() {
		out := w.take()
		if !slices.IsSortedFunc(out, func(a, b wbRegion) int { return cmp.Compare(a.index, b.index) }) {
			t.Errorf("take out of file order: %v", out)
		}
		for _, r := range out {
			if r.bytes == 0 || r.bytes > wbRegionBytes {
				t.Errorf("region %d taken with %d bytes noted", r.index, r.bytes)
			}
			taken[r.index] = true
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			collect()
		}
	}
	collect()
	for g := range writers {
		for r := range noted[g] {
			if !taken[r] {
				t.Fatalf("region %d noted by writer %d was never taken", r, g)
			}
		}
	}
	if again := w.take(); len(again) != 0 {
		t.Fatalf("take after everything was taken: %v", again)
	}
}
