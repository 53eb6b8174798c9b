package prefetch

import "testing"

// TestLines: any slice, at any alignment, is prefetched without effect on
// its bytes (TestLinesNoAccess: memory that cannot be read).
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
}
