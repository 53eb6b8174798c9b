//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package mirror

import "syscall"

// mmapFile maps length bytes of the file fd from its start, read-only and
// shared, and advises the kernel that reads are random: a fault on the map
// then reads the page it needs, not the 128 KiB around it (the default
// read-around), which under memory pressure evicted the pages other reads
// needed (Linux only; see adviseRandom). Scans that need readahead issue
// their own (iterator_readahead.go in the root package).
func mmapFile(fd uintptr, length int) ([]byte, error) {
	b, err := syscall.Mmap(int(fd), 0, length, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	adviseRandom(b)
	return b, nil
}

func munmapFile(b []byte) error { return syscall.Munmap(b) }
