package main

import (
	"os"
	"syscall"
	"testing"
)

// allocatedBytes returns the bytes the file system allocated to the file
// at p (st_blocks).
func allocatedBytes(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
