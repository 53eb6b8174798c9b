package mirror

import (
	"encoding/binary"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// presentPages reports, for each page of b, whether the process's page
// tables map it (bit 63 of its /proc/self/pagemap entry).
func presentPages(t *testing.T, b []byte) []bool {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatalf("open pagemap: %v", err)
	}
	defer f.Close()
	pages := len(b) / pageSize
	buf := make([]byte, 8*pages)
	addr := uintptr(unsafe.Pointer(&b[0]))
	if _, err := f.ReadAt(buf, int64(addr/pageSize*8)); err != nil {
		t.Fatalf("read pagemap: %v", err)
	}
	present := make([]bool, pages)
	for i := range present {
		present[i] = binary.LittleEndian.Uint64(buf[8*i:])>>63 != 0
	}
	return present
}

// residentPages reports, for each page of b, whether the page cache holds
// it (mincore).
func residentPages(t *testing.T, b []byte) []bool {
	t.Helper()
	vec := make([]byte, len(b)/pageSize)
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}

func countTrue(bs []bool) (n int) {
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// waitPopulated waits until the populator has mapped the current mapping up
// to byte off.
func waitPopulated(t *testing.T, s *Set, off int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.pop.m.Load() != s.view.Load().mapped || s.pop.mapped.Load() < off {
		if time.Now().After(deadline) {
			t.Fatalf("populator mapped %d bytes, want %d", s.pop.mapped.Load(), off)
		}
		time.Sleep(time.Millisecond)
	}
}

// spanChunk is the 64 KiB that writeSpan writes over and over.
func spanChunk() []byte {
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	return chunk
}

// writeSpan writes bytes [0, n) of blocks from block 0, 64 KiB at a time;
// if reading, it reads block 0 back through the map after each write, as
// a workload of reads and writes would.
func writeSpan(t *testing.T, s *Set, n int, reading bool) {
	t.Helper()
	chunk := spanChunk()
	for off := 0; off < n; off += len(chunk) {
		if err := s.WriteAt(chunk, uint64(off/testBS)); err != nil {
			t.Fatal(err)
		}
		if reading {
			mustReadMapped(t, s, 0, chunk[:testBS])
		}
	}
}

// Writes are mapped ahead of reads while reads come: once the writes stop,
// the populator has mapped all but less than one populate step behind the
// furthest write (it is woken each time the writes get a step ahead), and
// every page of that is in the process's page tables though nothing but
// block 0 was read.
func TestPopulateFollowsWrites(t *testing.T) {
	s, _ := mappedSet(t, 1)
	n := populateStep*2 + populateStep/2
	writeSpan(t, s, n, true)
	end := s.offset(uint64(n / testBS))
	waitPopulated(t, s, end-populateStep+1)
	mapped := s.pop.mapped.Load() &^ (pageSize - 1)
	m := s.view.Load().mapped
	present := presentPages(t, m.data[:mapped])
	if got := countTrue(present); got != len(present) {
		t.Fatalf("%d of the first %d pages written are mapped", got, len(present))
	}
	if s.PopulatedBytes() < end-populateStep {
		t.Fatalf("PopulatedBytes %d, want at least %d", s.PopulatedBytes(), end-populateStep)
	}
}

// Nothing is populated while nothing reads the map: writes alone leave the
// map as it was, and the first read then maps all that was written.
func TestPopulateWaitsForReads(t *testing.T) {
	s, _ := mappedSet(t, 1)
	n := populateStep*2 + populateStep/2
	writeSpan(t, s, n, false)
	end := s.offset(uint64(n / testBS))
	m := s.view.Load().mapped
	// A populator that ran would have been woken by the writes themselves;
	// give it the time a step takes many times over.
	time.Sleep(100 * time.Millisecond)
	if got := s.PopulatedBytes(); got != 0 {
		t.Fatalf("PopulatedBytes %d after writes alone, want 0", got)
	}
	if got := countTrue(presentPages(t, m.data[:end&^(pageSize-1)])); got != 0 {
		t.Fatalf("%d pages mapped after writes alone, want none", got)
	}
	chunk := spanChunk()
	mustReadMapped(t, s, uint64(n/testBS)-1, chunk[len(chunk)-testBS:])
	waitPopulated(t, s, end)
	if got, want := countTrue(presentPages(t, m.data[:end&^(pageSize-1)])), int(end/pageSize); got != want {
		t.Fatalf("%d of the %d pages written are mapped after a read", got, want)
	}
}

// When reads resume after more than two steps of writes alone, the
// populator catches up with the pages still cached and reads none back:
// writes alone may go on long enough for their pages to leave the cache.
func TestPopulateCatchUpMapsCachedPagesOnly(t *testing.T) {
	s, paths := mappedSet(t, 1)
	chunk := spanChunk()
	writeSpan(t, s, 64<<10, true) // the map populated once, at its first read
	waitPopulated(t, s, 1)
	// The read after the populator's step may have set its flag again;
	// clear it, so that the writes below are writes alone.
	s.pop.read.Store(false)
	from := s.pop.mapped.Load()
	n := 3 * populateStep
	for off := 64 << 10; off < n; off += len(chunk) {
		if err := s.WriteAt(chunk, uint64(off/testBS)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	end := s.offset(uint64(n / testBS))
	// Evict the second half of what was written alone (clean after Sync).
	half := (from + (end-from)/2) &^ (pageSize - 1)
	f, err := os.Open(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	const fadvDontNeed = 4
	if _, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), uintptr(half), uintptr(end-half), fadvDontNeed, 0, 0); errno != 0 {
		t.Fatalf("fadvise: %v", errno)
	}
	f.Close()
	m := s.view.Load().mapped
	evicted := m.data[half : end&^(pageSize-1)]
	if got := countTrue(residentPages(t, evicted)); got > len(evicted)/pageSize/4 {
		t.Fatalf("%d of %d pages still cached after fadvise; the test cannot tell", got, len(evicted)/pageSize)
	}
	mustReadMapped(t, s, 0, chunk[:testBS])
	waitPopulated(t, s, end)
	if got := countTrue(presentPages(t, m.data[from&^(pageSize-1):half])); got != int((half-from&^(pageSize-1))/pageSize) {
		t.Fatalf("%d of the %d cached pages written alone are mapped", got, (half-from&^(pageSize-1))/pageSize)
	}
	if got := countTrue(residentPages(t, evicted)); got > len(evicted)/pageSize/4+16 {
		t.Fatalf("%d of %d evicted pages cached after the catch-up: it read them back", got, len(evicted)/pageSize)
	}
}

// A reopened set maps the pages of its file that are cached, and only
// those: pages evicted before the reopen are neither mapped nor read back
// into the page cache by the populator.
func TestPopulateMapsCachedPagesAtOpen(t *testing.T) {
	s, paths := mappedSet(t, 1)
	const n = 8 << 20
	writeSpan(t, s, n, false)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	size := s.offset(uint64(n / testBS))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Evict the second half of the file from the page cache (its pages are
	// clean after the Sync).
	f, err := os.Open(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	half := size / 2 &^ (pageSize - 1)
	const fadvDontNeed = 4
	if _, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), uintptr(half), uintptr(size-half), fadvDontNeed, 0, 0); errno != 0 {
		t.Fatalf("fadvise: %v", errno)
	}
	f.Close()

	s, err = Open(Config{FS: vfs.Default, DBID: testID, BlockSize: testBS, Logger: slog.New(slog.DiscardHandler), MapReads: true},
		OpenOptions{Replicas: []ReplicaSpec{{Path: paths[0]}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := s.view.Load().mapped
	if m == nil {
		t.Fatal("reopened set does not map its replica")
	}
	data := m.data[:size&^(pageSize-1)]
	resident := residentPages(t, data)
	chunk := spanChunk()
	mustReadMapped(t, s, 0, chunk[:testBS]) // the first read populates
	waitPopulated(t, s, size)
	present := presentPages(t, data)
	cachedBefore, mappedCached, mappedEvicted := 0, 0, 0
	for i := range present {
		if resident[i] {
			cachedBefore++
			if present[i] {
				mappedCached++
			}
		} else if present[i] {
			mappedEvicted++
		}
	}
	if cachedBefore < len(data)/pageSize/4 {
		t.Fatalf("only %d of %d pages were cached before the reopen; the test cannot tell", cachedBefore, len(data)/pageSize)
	}
	if mappedCached != cachedBefore {
		t.Fatalf("%d of the %d cached pages are mapped", mappedCached, cachedBefore)
	}
	if mappedEvicted != 0 {
		t.Fatalf("%d evicted pages were mapped (read back from disk)", mappedEvicted)
	}
	if still := countTrue(residentPages(t, data)); still > cachedBefore+16 {
		t.Fatalf("%d pages cached after the populator ran, %d before: it read evicted pages", still, cachedBefore)
	}
}

// populators counts the goroutines running populateLoop.
func populators() int {
	buf := make([]byte, 1<<22)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "mirror.(*Set).populateLoop(")
}

// Close stops a populator in the middle of its work and waits for it: no
// populator outlives its set, and no Close hangs.
func TestPopulateStopsAtClose(t *testing.T) {
	s, paths := mappedSet(t, 1)
	writeSpan(t, s, 4*populateStep, false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := populators()
	for range 20 {
		s, err := Open(Config{FS: vfs.Default, DBID: testID, BlockSize: testBS, Logger: slog.New(slog.DiscardHandler), MapReads: true},
			OpenOptions{Replicas: []ReplicaSpec{{Path: paths[0]}}})
		if err != nil {
			t.Fatal(err)
		}
		if s.pop == nil {
			t.Fatal("a set with MapReads on Linux has no populator")
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// A stopped populator has called Done, which Close waited for, but its
	// goroutine may still be on its way out: allow it a moment. A
	// populator Close did not stop never leaves.
	deadline := time.Now().Add(5 * time.Second)
	for after := populators(); after > before; after = populators() {
		if time.Now().After(deadline) {
			t.Fatalf("%d populators running after 20 opens and closes, %d before", after, before)
		}
		time.Sleep(time.Millisecond)
	}
}
