package heapkv

import (
	"fmt"
	"io"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// heldDirs records the lock files this process holds. File locks taken with
// fcntl do not exclude a second handle in the same process, so Open checks
// here first.
var heldDirs = struct {
	// mu guards paths.
	mu    sync.Mutex
	paths map[string]bool
}{paths: map[string]bool{}}

// dirLock is the exclusive hold of one database directory.
type dirLock struct {
	key  string
	file io.Closer
}

// lockDir takes the LOCK file of dir, failing with ErrLocked if another
// handle in this or another process holds it.
func lockDir(fs vfs.FS, dir string) (*dirLock, error) {
	path := fs.PathJoin(dir, lockFileName)
	key := fmt.Sprintf("%p:%s", fs, path)
	if fs == vfs.Default {
		if abs, err := absPath(path); err == nil {
			key = "os:" + abs
		}
	}
	heldDirs.mu.Lock()
	defer heldDirs.mu.Unlock()
	if heldDirs.paths[key] {
		return nil, fmt.Errorf("%w: %s is open in this process", ErrLocked, dir)
	}
	f, err := fs.Lock(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLocked, path, err)
	}
	heldDirs.paths[key] = true
	return &dirLock{key: key, file: f}, nil
}

func (l *dirLock) release() error {
	heldDirs.mu.Lock()
	delete(heldDirs.paths, l.key)
	heldDirs.mu.Unlock()
	return l.file.Close()
}

func absPath(p string) (string, error) { return filepath.Abs(p) }
