//go:build unix

package enginebench

import (
	"io/fs"
	"syscall"
)

// AllocatedBytes returns the bytes the file system allocated to fi's file
// (st_blocks, in 512-byte units whatever the block size), and false where
// fi does not say (callers then count its apparent size).
func AllocatedBytes(fi fs.FileInfo) (int64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int64(st.Blocks) * 512, true
}
