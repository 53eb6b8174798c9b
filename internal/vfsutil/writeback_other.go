//go:build !(linux && (amd64 || arm64))

package vfsutil

import "github.com/cockroachdb/pebble/v2/vfs"

// WriteBack does nothing where sync_file_range is missing: the fdatasync
// that follows flushes everything.
func WriteBack(vfs.File, int64, int64) error { return nil }

// StartWriteBack does nothing where sync_file_range is missing.
func StartWriteBack(vfs.File, int64, int64) {}
