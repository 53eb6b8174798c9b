package heapkv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// heldDirs records the lock files this process holds. File locks taken with
// fcntl do not exclude a second handle in the same process, so Open checks
// here first.
var heldDirs = struct {
	// mu guards paths, and serialises taking and releasing locks.
	mu    sync.Mutex
	paths map[string]bool
}{paths: map[string]bool{}}

// dirLock is the exclusive hold of one database directory.
type dirLock struct {
	fs   vfs.FS
	key  string
	path string
	file io.Closer
	// created: lockDir made the LOCK file. Unless kept, release removes
	// it, so that a directory Open refuses is left as it was found.
	created bool
	kept    bool
}

// lockDir takes the LOCK file of dir. Only when another handle holds it,
// in this process (heldDirs) or in another (the lock call reports
// contention), does the error wrap ErrLocked; any other failure (a
// directory without write permission, a read-only file system, a path that
// is not a directory) wraps the operating system's error and is not
// ErrLocked, so a caller that retries on ErrLocked does not retry forever.
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
	_, statErr := fs.Stat(path)
	created := oserror.IsNotExist(statErr)
	f, err := fs.Lock(path)
	if err != nil {
		if lockContended(err) {
			return nil, fmt.Errorf("%w: %s is held by another handle: %w", ErrLocked, path, err)
		}
		// The lock call creates the file before it locks it.
		if created {
			_ = fs.Remove(path)
		}
		return nil, fmt.Errorf("heapkv: lock %s: %w", path, err)
	}
	heldDirs.paths[key] = true
	return &dirLock{fs: fs, key: key, path: path, file: f, created: created}, nil
}

// pebbleHeldInProcess is the text of the error vfs.Default's Lock returns
// for a file this process already locked through it (it has no sentinel).
// heldDirs sees such a second handle first, unless the two went through
// different vfs.FS values.
const pebbleHeldInProcess = "lock held by current process"

// lockContended reports whether err, from vfs.FS.Lock, says that someone
// else holds the lock. vfs.Default opens (creating) the file, failing with
// an *fs.PathError, and then calls fcntl(F_SETLK), which fails with a bare
// EAGAIN or EACCES (POSIX allows either) when another process holds a
// conflicting lock; MemFS returns EAGAIN for a file it has locked. An
// EACCES inside a PathError is a permission problem, not contention.
func lockContended(err error) bool {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return false
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno == syscall.EAGAIN || errno == syscall.EWOULDBLOCK || errno == syscall.EACCES
	}
	return err.Error() == pebbleHeldInProcess
}

// keep marks the database as established: release leaves the LOCK file.
func (l *dirLock) keep() { l.kept = true }

// release removes the LOCK file if lockDir created it and keep was not
// called (while still holding the lock, so that nobody can hold a lock on
// the removed file), then unlocks it.
func (l *dirLock) release() error {
	heldDirs.mu.Lock()
	defer heldDirs.mu.Unlock()
	var errs []error
	if l.created && !l.kept {
		if err := l.fs.Remove(l.path); err != nil && !oserror.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("heapkv: remove %s: %w", l.path, err))
		}
	}
	errs = append(errs, l.file.Close())
	delete(heldDirs.paths, l.key)
	return errors.Join(errs...)
}

func absPath(p string) (string, error) { return filepath.Abs(p) }
