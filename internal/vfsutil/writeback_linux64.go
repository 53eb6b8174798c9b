//go:build linux && (amd64 || arm64)

package vfsutil

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

// WriteBack writes back the dirty pages of [off, off+n) of f and waits for
// them (sync_file_range with wait-before, write and wait-after; on amd64
// and arm64 the call takes fd, offset, length, flags). A file without a
// descriptor is skipped; so is a kernel without the call (ENOSYS) and a
// file it does not apply to (ESPIPE): the fdatasync that follows flushes
// everything anyway. Any other error is returned, an I/O error of the
// range included; the caller must keep it, since the file's next
// fdatasync will not report it again.
func WriteBack(f vfs.File, off, n int64) error {
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

// StartWriteBack starts the write-back of the dirty pages of [off, off+n)
// of f (sync_file_range with write only) and returns at once. It reports
// nothing: an error it meets is the next fdatasync's to report.
func StartWriteBack(f vfs.File, off, n int64) {
	if fd := f.Fd(); fd != vfs.InvalidFd {
		syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, fd, uintptr(off), uintptr(n), syncRangeWrite, 0, 0)
	}
}
