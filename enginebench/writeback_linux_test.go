//go:build linux && (amd64 || arm64)

package enginebench

import (
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// writeBackRegion writes back the dirty pages of [off, off+n) of f and
// waits for them, as mirror.WriteBack does (sync_file_range with
// wait-before, write and wait-after: flags 1|2|4 of linux/fs.h). An error
// is left to the fdatasync that follows.
func writeBackRegion(f vfs.File, off, n int64) {
	if fd := f.Fd(); fd != vfs.InvalidFd {
		syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, fd, uintptr(off), uintptr(n), 1|2|4, 0, 0)
	}
}
