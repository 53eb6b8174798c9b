//go:build !unix

package enginebench

import "time"

// cpuTime returns 0: this platform has no getrusage, so the benchmarks'
// CPU figures read 0 here.
func cpuTime() time.Duration { return 0 }
