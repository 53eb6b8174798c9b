//go:build !unix

package heapkv

import (
	"io"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// lockShared takes path exclusively where there is no shared file lock to
// take: one read-only handle at a time.
func lockShared(path string) (io.Closer, error) { return vfs.Default.Lock(path) }
