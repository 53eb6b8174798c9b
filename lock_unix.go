//go:build unix

package heapkv

import (
	"io"
	"os"
	"syscall"
)

// lockShared opens path read-only and takes a shared (read) fcntl lock on
// the whole file: read-write handles take an exclusive one on the same
// file (vfs.Default's Lock), so the two exclude each other across
// processes. It fails with a bare errno (EAGAIN or EACCES) when a
// read-write handle holds the file.
func lockShared(path string) (io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	lk := syscall.Flock_t{Type: syscall.F_RDLCK, Whence: io.SeekStart}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
