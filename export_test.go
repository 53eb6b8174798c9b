package heapkv

import "github.com/cockroachdb/pebble/v2/vfs"

// SetFS makes Open use fs for every file; tests pass crash-simulating and
// fault-injecting file systems.
func SetFS(o *Options, fs vfs.FS) { o.fs = fs }
