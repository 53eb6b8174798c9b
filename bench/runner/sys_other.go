//go:build !unix

package runner

import "time"

// PeakRSS returns 0: this platform has no getrusage.
func PeakRSS() int64 { return 0 }

// CPUTime returns 0, 0: this platform has no getrusage, so the harness's
// CPU figures read 0 here.
func CPUTime() (user, sys time.Duration) { return 0, 0 }
