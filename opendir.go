package heapkv

import (
	"fmt"
	"os"
	"syscall"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// mkdirLeaf makes sure dir is a directory, creating it (and syncing its
// parent, so the new entry survives a crash) if it does not exist. It
// creates the last element of the path only: a missing parent is an error
// wrapping fs.ErrNotExist that names it, so that a mistyped path, or a
// mount point whose disk is not mounted one level up, is refused rather
// than silently given a new tree of directories. created reports whether
// it made dir, with mode perm. A path that is not a directory wraps syscall.ENOTDIR.
func mkdirLeaf(fs vfs.FS, dir string, perm os.FileMode) (created bool, err error) {
	fi, err := fs.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return false, nil
	case err == nil:
		return false, fmt.Errorf("heapkv: %s: %w", dir, syscall.ENOTDIR)
	case !oserror.IsNotExist(err):
		return false, fmt.Errorf("heapkv: database directory: %w", err)
	}
	parent := fs.PathDir(dir)
	if fi, err := fs.Stat(parent); err != nil {
		if oserror.IsNotExist(err) {
			return false, fmt.Errorf("heapkv: create %s: missing parent directory %s: %w", dir, parent, err)
		}
		return false, fmt.Errorf("heapkv: create %s: %w", dir, err)
	} else if !fi.IsDir() {
		return false, fmt.Errorf("heapkv: create %s: %s: %w", dir, parent, syscall.ENOTDIR)
	}
	if err := fs.MkdirAll(dir, perm); err != nil {
		return false, fmt.Errorf("heapkv: create %s: %w", dir, err)
	}
	if err := vfsutil.SyncDir(fs, parent); err != nil {
		return true, fmt.Errorf("heapkv: create %s: sync %s: %w", dir, parent, err)
	}
	return true, nil
}
