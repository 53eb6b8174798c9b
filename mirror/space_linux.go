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
