//go:build !unix

package heapkv

import "io/fs"

// fchmod does nothing where files have no Unix modes.
func fchmod(uintptr, fs.FileMode) error { return nil }
