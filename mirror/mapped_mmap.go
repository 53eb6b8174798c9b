//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package mirror

import "syscall"

func mmapFile(fd uintptr, length int) ([]byte, error) {
	return syscall.Mmap(int(fd), 0, length, syscall.PROT_READ, syscall.MAP_SHARED)
}

func munmapFile(b []byte) error { return syscall.Munmap(b) }
