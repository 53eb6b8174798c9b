//go:build unix

package heapkv

import (
	"io/fs"
	"syscall"
)

func fchmod(fd uintptr, m fs.FileMode) error { return syscall.Fchmod(int(fd), uint32(m.Perm())) }
