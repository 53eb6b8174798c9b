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
	paths map[string]*heldDir
}{paths: map[string]*heldDir{}}

// heldDir is one directory this process holds: exclusively (one
// read-write handle) or shared by its read-only handles, which share one
// lock on the file (closing any descriptor of a file drops every fcntl lock
// the process holds on it, so each handle cannot take its own).
type heldDir struct {
	shared  bool
	readers int       // read-only handles holding it (shared)
	file    io.Closer // the shared lock (shared)
}

// dirLock is one handle's hold of a database directory.
type dirLock struct {
	fs   vfs.FS
	key  string
	path string
	file io.Closer // nil for a shared hold: the heldDir's file is the lock
	// created: lockDir made the LOCK file. Unless kept, release removes
	// it, so that a directory Open refuses is left as it was found.
	created bool
	kept    bool
}

// lockKey names path in heldDirs: by absolute path on the operating
// system's file system, else by file system and path.
func lockKey(fs vfs.FS, path string) string {
	if fs == vfs.Default {
		if abs, err := absPath(path); err == nil {
			return "os:" + abs
		}
	}
	return fmt.Sprintf("%p:%s", fs, path)
}

// lockDir takes the LOCK file of dir exclusively. Only when another handle
// holds it, in this process (heldDirs) or in another (the lock call
// reports contention), does the error wrap ErrLocked; any other failure (a
// directory without write permission, a read-only file system, a path that
// is not a directory) wraps the operating system's error and is not
// ErrLocked, so a caller that retries on ErrLocked does not retry forever.
func lockDir(fs vfs.FS, dir string, mode os.FileMode) (*dirLock, error) {
	path := fs.PathJoin(dir, lockFileName)
	key := lockKey(fs, path)
	heldDirs.mu.Lock()
	defer heldDirs.mu.Unlock()
	if h := heldDirs.paths[key]; h != nil {
		if h.shared {
			return nil, fmt.Errorf("%w: %s is open read-only in this process", ErrLocked, dir)
		}
		return nil, fmt.Errorf("%w: %s is open in this process", ErrLocked, dir)
	}
	_, statErr := fs.Stat(path)
	created := oserror.IsNotExist(statErr)
	f, err := withFileMode(fs, mode).Lock(path) // a LOCK others can read is one they can hold a read lock on
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
	heldDirs.paths[key] = &heldDir{}
	return &dirLock{fs: fs, key: key, path: path, file: f, created: created}, nil
}

// lockDirShared takes the LOCK file of dir for a read-only handle: shared
// with the other read-only handles, in this process and (on the operating
// system's file system, Unix) in others, and excluding read-write ones.
// It creates nothing: the LOCK file must exist (every database opened
// read-write once has one). Other file systems (tests' in-memory ones)
// are shared within the process only.
func lockDirShared(fs vfs.FS, dir string) (*dirLock, error) {
	path := fs.PathJoin(dir, lockFileName)
	key := lockKey(fs, path)
	heldDirs.mu.Lock()
	defer heldDirs.mu.Unlock()
	l := &dirLock{fs: fs, key: key, path: path, kept: true}
	if h := heldDirs.paths[key]; h != nil {
		if !h.shared {
			return nil, fmt.Errorf("%w: %s is open read-write in this process", ErrLocked, dir)
		}
		h.readers++
		return l, nil
	}
	if _, err := fs.Stat(path); err != nil {
		return nil, fmt.Errorf("heapkv: read-only open of %s: %w", dir, err)
	}
	h := &heldDir{shared: true, readers: 1}
	if fs == vfs.Default {
		f, err := lockShared(path)
		if err != nil {
			if lockContended(err) {
				return nil, fmt.Errorf("%w: %s is held by a read-write handle: %w", ErrLocked, path, err)
			}
			return nil, fmt.Errorf("heapkv: lock %s: %w", path, err)
		}
		h.file = f
	}
	heldDirs.paths[key] = h
	return l, nil
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
// the removed file), then unlocks it. The last read-only handle of a
// directory drops the shared lock.
func (l *dirLock) release() error {
	heldDirs.mu.Lock()
	defer heldDirs.mu.Unlock()
	if l.file == nil { // a shared hold
		h := heldDirs.paths[l.key]
		if h.readers--; h.readers > 0 {
			return nil
		}
		delete(heldDirs.paths, l.key)
		if h.file != nil {
			return h.file.Close()
		}
		return nil
	}
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
