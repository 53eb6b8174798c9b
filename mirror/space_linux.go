package mirror

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// fallocate(2) modes (linux/falloc.h).
const (
	fallocKeepSize  = 0x1
	fallocPunchHole = 0x2
)

func punchHole(f vfs.File, off, length int64) error {
	fd, err := fdOf(f)
	if err != nil {
		return err
	}
	for {
		err = syscall.Fallocate(fd, fallocKeepSize|fallocPunchHole, off, length)
		if err != syscall.EINTR {
			break
		}
	}
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return fmt.Errorf("fallocate(PUNCH_HOLE): %w: %w", err, errors.ErrUnsupported)
	}
	return err
}

func truncateFile(f vfs.File, size int64) error {
	fd, err := fdOf(f)
	if err != nil {
		return err
	}
	for {
		err = syscall.Ftruncate(fd, size)
		if err != syscall.EINTR {
			return err
		}
	}
}

func allocatedBytes(f vfs.File) int64 {
	fd, err := fdOf(f)
	if err != nil {
		return -1
	}
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil {
		return -1
	}
	return st.Blocks * 512 // st_blocks counts 512-byte units (stat(2))
}

// seekData is lseek(2)'s SEEK_DATA (Linux 3.1).
const seekData = 3

// isHole reports whether [off, off+length) of f holds no data: the first
// data at or after off (SEEK_DATA) starts at or past its end, or there is
// none (ENXIO). It moves f's file offset, which the heap's positional
// reads and writes do not use.
func isHole(f vfs.File, off, length int64) (bool, error) {
	fd, err := fdOf(f)
	if err != nil {
		return false, err
	}
	for {
		data, err := syscall.Seek(fd, off, seekData)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.ENXIO:
			return true, nil
		case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
			return false, fmt.Errorf("lseek(SEEK_DATA): %w: %w", err, errors.ErrUnsupported)
		case err != nil:
			return false, err
		}
		return data >= off+length, nil
	}
}

// fdOf returns f's descriptor, or an error wrapping errors.ErrUnsupported.
func fdOf(f vfs.File) (int, error) {
	fd := f.Fd()
	if fd == vfs.InvalidFd {
		return 0, fmt.Errorf("file has no descriptor: %w", errors.ErrUnsupported)
	}
	return int(fd), nil
}
