//go:build unix

package prefetch

import (
	"syscall"
	"testing"
)

// TestLinesNoAccess: memory that cannot be read (a mapping without
// access, as a page of a failed disk is to the processor) is prefetched
// without a fault.
func TestLinesNoAccess(t *testing.T) {
	m, err := syscall.Mmap(-1, 0, 1<<16, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Skipf("no anonymous mapping without access here: %v", err)
	}
	defer syscall.Munmap(m)
	Lines(m) // a load here would fault (SIGSEGV): a prefetch must not
	Lines(m[100:101])
}
