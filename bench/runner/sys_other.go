//go:build !unix

package runner

import (
	"io/fs"
	"time"
)

// allocatedBytes reports false: this platform's file information does not
// say how much the file system allocated (DiskUsage counts the apparent
// size).
func allocatedBytes(fs.FileInfo) (int64, bool) { return 0, false }

// PeakRSS returns 0: this platform has no getrusage.
func PeakRSS() int64 { return 0 }

// CPUTime returns 0, 0: this platform has no getrusage, so the harness's
// CPU figures read 0 here.
func CPUTime() (user, sys time.Duration) { return 0, 0 }
