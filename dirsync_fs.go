package heapkv

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// dirSyncFS is the file system Pebble sees: it makes every new directory
// entry durable as soon as it exists, by syncing the parent directory after
// each Create, Link, Rename and ReuseForWrite.
//
// Pebble installs a new MANIFEST by creating it, creating a marker file
// that names it, removing the old marker, and only then syncing the
// directory. On a file system that may persist one unsynced directory entry
// without an earlier one (Pebble's own crash-simulating MemFS does, and so
// may file systems without ordered metadata), a crash inside that window can
// leave the new marker without the MANIFEST it names, and the index cannot
// be opened. With every entry durable at creation the marker never outlives
// its MANIFEST. The cost is one directory fsync per file Pebble creates
// (tables, manifests, markers): rare next to the writes they carry.
type dirSyncFS struct {
	vfs.FS
}

func (fs dirSyncFS) syncParent(name string) error {
	if err := vfsutil.SyncDir(fs.FS, fs.FS.PathDir(name)); err != nil {
		return fmt.Errorf("sync directory of %s: %w", name, err)
	}
	return nil
}

// Create creates name and syncs its directory.
func (fs dirSyncFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil {
		return nil, err
	}
	if err := fs.syncParent(name); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Link links newname to oldname and syncs newname's directory.
func (fs dirSyncFS) Link(oldname, newname string) error {
	if err := fs.FS.Link(oldname, newname); err != nil {
		return err
	}
	return fs.syncParent(newname)
}

// Rename renames oldname to newname and syncs newname's directory.
func (fs dirSyncFS) Rename(oldname, newname string) error {
	if err := fs.FS.Rename(oldname, newname); err != nil {
		return err
	}
	return fs.syncParent(newname)
}

// ReuseForWrite renames oldname to newname for reuse and syncs the directory.
func (fs dirSyncFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	if err != nil {
		return nil, err
	}
	if err := fs.syncParent(newname); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Unwrap returns the wrapped file system.
func (fs dirSyncFS) Unwrap() vfs.FS { return fs.FS }
