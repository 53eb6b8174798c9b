package prefetch

import (
	"syscall"
	"testing"
)

// TestLines: any slice, at any alignment, is prefetched without effect on
// its bytes, and memory that cannot be read (a mapping without access, as
// a page of a failed disk is to the processor) is prefetched without a
// fault.
func TestLines(t *testing.T) {
	b := make([]byte, 4096+200)
	for i := range b {
		b[i] = byte(i)
	}
	Lines(nil)
	for _, r := range [][2]int{{0, 1}, {63, 65}, {1, 4097}, {100, 4296}, {64, 128}} {
		Lines(b[r[0]:r[1]])
	}
	for i := range b {
		if b[i] != byte(i) {
			t.Fatalf("byte %d changed", i)
		}
	}
	m, err := syscall.Mmap(-1, 0, 1<<16, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Skipf("no anonymous mapping without access here: %v", err)
	}
	defer syscall.Munmap(m)
	Lines(m) // a load here would fault (SIGSEGV): a prefetch must not
	Lines(m[100:101])
}
