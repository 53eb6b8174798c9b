package mirror

import (
	"syscall"
	"unsafe"
)

// canPopulate: Linux maps a range of cached pages in one call
// (MADV_POPULATE_READ, Linux 5.14) and tells which pages are cached
// (mincore).
const canPopulate = true

// pageSize is the granularity of mincore and of the map's page tables; a
// smaller page than the machine's only makes mincore's answer coarser.
const pageSize = 4096

// madvPopulateRead is MADV_POPULATE_READ (the syscall package predates it).
const madvPopulateRead = 22

// populateRange maps the pages of b, reading any that are not cached.
func populateRange(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), madvPopulateRead)
	if errno != 0 {
		return errno
	}
	return nil
}

// populateResident maps the pages of b that are cached, leaving the others
// to fault when read, and returns how many bytes it mapped. b starts on a
// page boundary (a mapping's data does, and populate steps by whole pages).
func populateResident(b []byte) int64 {
	pages := (len(b) + pageSize - 1) / pageSize
	if pages == 0 {
		return 0
	}
	vec := make([]byte, pages)
	_, _, errno := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return 0
	}
	var n int64
	for i := 0; i < pages; {
		if vec[i]&1 == 0 {
			i++
			continue
		}
		j := i + 1
		for j < pages && vec[j]&1 != 0 {
			j++
		}
		run := b[i*pageSize : min(j*pageSize, len(b))]
		if populateRange(run) == nil {
			n += int64(len(run))
		}
		i = j
	}
	return n
}
