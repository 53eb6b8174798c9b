//go:build !unix

package enginebench

import "io/fs"

// AllocatedBytes reports false: this platform's file information does not
// say how much the file system allocated (callers count the apparent size).
func AllocatedBytes(fs.FileInfo) (int64, bool) { return 0, false }
