package mirror

import (
	"bytes"
	"errors"
	"testing"
)

// TestIsHole: IsHole finds the blocks PunchHole gave back and the sparse
// region past the end of the file, and not blocks that hold data, on the
// operating system's file system; on MemFS it cannot tell.
func TestIsHole(t *testing.T) {
	s, _ := mappedSet(t, 1)
	const blocks = 256 // 128 KiB of 512-byte blocks
	if err := s.WriteAt(bytes.Repeat([]byte{7}, blocks*testBS), 0); err != nil {
		t.Fatal(err)
	}
	// Block b starts at HeaderArea(512) = 512 + 512b bytes: blocks 63-126
	// are the file's bytes 32-64 KiB, whole pages.
	if err := s.PunchHole(63, 64); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		block uint64
		n     int
		want  bool
	}{
		{0, 63, false},   // written
		{63, 64, true},   // punched
		{71, 8, true},    // inside the hole
		{59, 8, false},   // data, then the hole
		{63, 65, false},  // the hole, then data
		{127, 64, false}, // written
		{blocks, 64, true},
		{10 * blocks, 8, true}, // far past the end of the file
	} {
		got, err := s.IsHole(c.block, c.n)
		if err != nil || got != c.want {
			t.Errorf("IsHole(%d, %d) = %v, %v; want %v", c.block, c.n, got, err, c.want)
		}
	}

	f := newFixture(t, 1)
	if _, err := f.set.IsHole(0, 8); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("IsHole on MemFS: %v, want an error wrapping errors.ErrUnsupported", err)
	}
}
