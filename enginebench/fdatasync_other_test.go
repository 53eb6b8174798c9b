//go:build !linux

package enginebench

import "os"

// fdatasync flushes f with fsync where the platform has no fdatasync.
func fdatasync(f *os.File) error { return f.Sync() }
