//go:build !linux

package mirror

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func punchHole(vfs.File, int64, int64) error {
	return fmt.Errorf("hole punching on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func truncateFile(vfs.File, int64) error {
	return fmt.Errorf("truncating a heap file on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func allocatedBytes(vfs.File) int64 { return -1 }

func isHole(vfs.File, int64, int64) (bool, error) {
	return false, fmt.Errorf("finding holes on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
