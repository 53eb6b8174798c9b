//go:build linux && (amd64 || arm64)

package mirror

import (
	"errors"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// sync_file_range flags (linux/fs.h).
const (
	syncRangeWaitBefore = 1
	syncRangeWrite      = 2
	syncRangeWaitAfter  = 4
)

// writeBackRange writes back the dirty pages of [off, off+n) of f and waits
// for them (sync_file_range with wait-before, write and wait-after; on
// amd64 and arm64 the call takes fd, offset, length, flags). A file
// without a descriptor is skipped; so is a kernel without the call
// (ENOSYS) and a file it does not apply to (ESPIPE): the Sync that
// follows flushes everything anyway. EINVAL (bad flags or range: a bug
// here) is returned, so TestWriteBackRealFile would see it.
func writeBackRange(f vfs.File, off, n int64) error {
	fd := f.Fd()
	if fd == vfs.InvalidFd {
		return nil
	}
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, fd, uintptr(off), uintptr(n),
			syncRangeWaitBefore|syncRangeWrite|syncRangeWaitAfter, 0, 0)
		var err error
		if e != 0 {
			err = e
		}
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.ESPIPE):
			return nil
		}
		return err
	}
}

// startWriteBack starts the write-back of the dirty pages of [off, off+n)
// of f (sync_file_range with write only) and returns at once. It reports
// nothing: an error it meets is the next fdatasync's to report.
func startWriteBack(f vfs.File, off, n int64) {
	if fd := f.Fd(); fd != vfs.InvalidFd {
		syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, fd, uintptr(off), uintptr(n), syncRangeWrite, 0, 0)
	}
}
