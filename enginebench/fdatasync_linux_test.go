package enginebench

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data as a heap replica's sync does on Linux.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
