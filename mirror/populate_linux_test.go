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

// writeSpan writes bytes [0, n) of blocks from block 0, 64 KiB at a time.
func writeSpan(t *testing.T, s *Set, n int) {
	t.Helper()
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for off := 0; off < n; off += len(chunk) {
		if err := s.WriteAt(chunk, uint64(off/testBS)); err != nil {
			t.Fatal(err)
		}
	}
}

// Writes are mapped ahead of reads: once the writes stop, the populator
// has mapped all but less than one populate step behind the furthest write
// (it is woken each time the writes get a step ahead), and every page of
// that is in the process's page tables though nothing read it.
func TestPopulateFollowsWrites(t *testing.T) {
	s, _ := mappedSet(t, 1)
	n := populateStep*2 + populateStep/2
	writeSpan(t, s, n)
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
	want := make([]byte, testBS)
	for i := range want {
		want[i] = byte(i)
	}
	mustReadMapped(t, s, 0, want)
}

// A reopened set maps the pages of its file that are cached, and only
// those: pages evicted before the reopen are neither mapped nor read back
// into the page cache by the populator.
func TestPopulateMapsCachedPagesAtOpen(t *testing.T) {
	s, paths := mappedSet(t, 1)
	const n = 8 << 20
	writeSpan(t, s, n)
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
	writeSpan(t, s, 4*populateStep)
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
