package heapkv

import (
	"os"
	"testing"
)

// TestMain gives the databases of this package's tests (and of the child
// processes they start) 1 MiB log segments unless a test chooses: every
// segment is preallocated in full, and on a MemFS under the race detector
// zero-filling the default 16 MiB took most of a small test's time. Tests
// of the default size set Options.LogSegmentSize themselves.
func TestMain(m *testing.M) {
	testLogSegmentSize = 1 << 20
	os.Exit(m.Run())
}
