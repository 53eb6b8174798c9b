package mirror

import (
	"errors"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// writeBackRange writes back the dirty pages of [off, off+n) of f and waits
// for them (sync_file_range with WAIT_BEFORE, WRITE and WAIT_AFTER). A file
// without a descriptor is skipped; so is a file system without the call
// (ENOSYS, EINVAL): the Sync that follows flushes everything anyway.
func writeBackRange(f vfs.File, off, n int64) error {
	fd := f.Fd()
	if fd == vfs.InvalidFd {
		return nil
	}
	const flags = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
	for {
		err := unix.SyncFileRange(int(fd), off, n, flags)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ESPIPE):
			return nil
		}
		return err
	}
}
