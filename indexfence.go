package heapkv

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The index fence.
//
// After a failed MANIFEST write Pebble may keep appending edits behind a
// torn record that a later Open never reads; if it then deleted a
// compaction's inputs, the index would reopen naming tables that are gone.
// And after any failure of the database, an index flush may hold entries
// whose log records are not durable. So the first index failure (failIndex)
// raises a fence in the file system Pebble writes through, fencedFS, and the
// index on disk stays as the last MANIFEST edit before the fence left it.
// Behind the fence, files fall into two kinds:
//
//   - The MANIFEST, its markers and the index directory (the metadata
//     kind): creates, writes and syncs succeed without reaching the disk.
//   - Everything else (tables, OPTIONS, ...): every create, write, sync,
//     link, rename and remove fails with errIndexFenced. Remove fails for
//     both kinds, so every file an on-disk MANIFEST names stays.
//
// Why the metadata kind is swallowed rather than failed: Pebble treats a
// failed MANIFEST write as fatal (Logger.Fatalf) and assumes Fatalf does not
// return. When it returns, a compaction whose edit failed rolls back into
// in-memory state its own checks reject (a panic on Pebble's goroutine in
// race and invariants builds: "minIntervalIndex ... out of sync with
// intervals in L0Sublevels", seen in CI on a full disk) and that is stale
// otherwise. A swallowed edit keeps Pebble's memory consistent with real
// files instead: the tables an edit adds were written and synced before it
// (table writes behind the fence fail, so a flush or compaction still in
// its writes fails the ordinary way, before its edit), and the tables it
// drops stay on disk. Reads go on against that version; the next Open
// reads the MANIFEST on disk and removes the tables it does not name.
//
// A MANIFEST or marker write, or a directory sync, that fails for real
// (EIO, ENOSPC once the space reserve is gone) raises the fence with its
// cause and is swallowed the same way: the MANIFEST on disk then ends at
// the edit before it, or at a torn record that replay reads as its end, and
// since nothing is removed after it either reading is consistent. The
// database has failed (ErrFailed wrapping the cause), so everything that
// waits on an index operation (a checkpoint) checks the latch after the
// operation returns.

// errIndexFenced is what every write under index/ that is not swallowed
// returns once the index has failed.
var errIndexFenced = fmt.Errorf("%w: index is read-only after a fatal index error", ErrFailed)

// fencedFS is the file system Pebble writes through, with the fence. It is
// used by pointer: Pebble compares file systems, and fail is a func.
type fencedFS struct {
	vfs.FS
	fence *atomic.Bool
	// fail raises the fence and fails the database: it is called when a
	// metadata write fails for real.
	fail func(error)
}

// isIndexMetadata reports whether name is the MANIFEST or one of Pebble's
// marker files (marker.manifest.*, marker.format-version.*).
func isIndexMetadata(name string) bool {
	base := name[strings.LastIndexByte(name, os.PathSeparator)+1:]
	return strings.HasPrefix(base, "MANIFEST-") || strings.HasPrefix(base, "marker.")
}

func (f fencedFS) fenced() bool { return f.fence.Load() }

func (f fencedFS) check() error {
	if f.fenced() {
		return errIndexFenced
	}
	return nil
}

func (f fencedFS) wrap(name string, metadata bool, file vfs.File, err error) (vfs.File, error) {
	if err != nil {
		if metadata {
			// A MANIFEST or marker that cannot be created: fence, and
			// let Pebble write into nothing (see above).
			f.fail(fmt.Errorf("create %s: %w", name, err))
			return discardFile{}, nil
		}
		return nil, err
	}
	return fencedFile{File: file, fs: f, name: name, metadata: metadata}, nil
}

// Create fails once fenced, except for metadata files, which it creates in
// nothing; the file it returns checks the fence on every write.
func (f fencedFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	metadata := isIndexMetadata(name)
	if f.fenced() {
		if metadata {
			return discardFile{}, nil
		}
		return nil, errIndexFenced
	}
	file, err := f.FS.Create(name, category)
	return f.wrap(name, metadata, file, err)
}

// OpenReadWrite fails once fenced; the file it returns checks the fence.
func (f fencedFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	file, err := f.FS.OpenReadWrite(name, category, opts...)
	if err != nil {
		return nil, err
	}
	return fencedFile{File: file, fs: f, name: name, metadata: isIndexMetadata(name)}, nil
}

// OpenDir returns a directory handle whose Sync is of the metadata kind.
func (f fencedFS) OpenDir(name string) (vfs.File, error) {
	file, err := f.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return fencedFile{File: file, fs: f, name: name, metadata: true}, nil
}

// Link fails once fenced.
func (f fencedFS) Link(oldname, newname string) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.FS.Link(oldname, newname)
}

// Remove fails once fenced, so no table a MANIFEST on disk names is deleted.
func (f fencedFS) Remove(name string) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.FS.Remove(name)
}

// RemoveAll fails once fenced.
func (f fencedFS) RemoveAll(name string) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.FS.RemoveAll(name)
}

// Rename fails once fenced.
func (f fencedFS) Rename(oldname, newname string) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.FS.Rename(oldname, newname)
}

// ReuseForWrite fails once fenced.
func (f fencedFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	file, err := f.FS.ReuseForWrite(oldname, newname, category)
	if err != nil {
		return nil, err
	}
	return fencedFile{File: file, fs: f, name: newname, metadata: isIndexMetadata(newname)}, nil
}

// MkdirAll fails once fenced.
func (f fencedFS) MkdirAll(dir string, perm fs.FileMode) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.FS.MkdirAll(dir, perm)
}

// Lock takes no lock: the database directory's LOCK (lock.go) already
// excludes every other handle, and Pebble's own lock would keep a later
// Open in this process out of an index whose earlier open was abandoned
// (openPebble).
func (f fencedFS) Lock(name string) (io.Closer, error) { return noLock{}, nil }

type noLock struct{}

func (noLock) Close() error { return nil }

// Unwrap returns the wrapped file system.
func (f fencedFS) Unwrap() vfs.FS { return f.FS }

// fencedFile is a file of a fencedFS. Its writes and syncs fail once the
// fence is up, or, for the metadata kind, succeed without reaching the disk.
type fencedFile struct {
	vfs.File
	fs       fencedFS
	name     string
	metadata bool
}

// behind reports whether the fence stops an operation before the file, and
// if so what it returns instead: nil for the metadata kind, else
// errIndexFenced.
func (f fencedFile) behind() (bool, error) {
	if !f.fs.fenced() {
		return false, nil
	}
	if f.metadata {
		return true, nil
	}
	return true, errIndexFenced
}

// after turns a real failure of a metadata write into the fence and a
// swallowed result; other errors pass through.
func (f fencedFile) after(op string, err error) error {
	if err == nil || !f.metadata {
		return err
	}
	f.fs.fail(fmt.Errorf("%s %s: %w", op, f.name, err))
	return nil
}

// Write writes p unless fenced.
func (f fencedFile) Write(p []byte) (int, error) {
	if stop, err := f.behind(); stop {
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	n, err := f.File.Write(p)
	if err = f.after("write", err); err == nil {
		n = len(p)
	}
	return n, err
}

// WriteAt writes p at off unless fenced.
func (f fencedFile) WriteAt(p []byte, off int64) (int, error) {
	if stop, err := f.behind(); stop {
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	n, err := f.File.WriteAt(p, off)
	if err = f.after("write", err); err == nil {
		n = len(p)
	}
	return n, err
}

// Preallocate preallocates unless fenced.
func (f fencedFile) Preallocate(off, n int64) error {
	if stop, err := f.behind(); stop {
		return err
	}
	return f.after("preallocate", f.File.Preallocate(off, n))
}

// Sync syncs unless fenced.
func (f fencedFile) Sync() error {
	if stop, err := f.behind(); stop {
		return err
	}
	return f.after("sync", f.File.Sync())
}

// SyncData syncs unless fenced.
func (f fencedFile) SyncData() error {
	if stop, err := f.behind(); stop {
		return err
	}
	return f.after("sync", f.File.SyncData())
}

// SyncTo syncs unless fenced.
func (f fencedFile) SyncTo(length int64) (fullSync bool, err error) {
	if stop, err := f.behind(); stop {
		return err == nil, err
	}
	fullSync, err = f.File.SyncTo(length)
	if err = f.after("sync", err); err != nil {
		return false, err
	}
	return fullSync, nil
}

// discardFile is a metadata file created behind the fence: it takes every
// write and sync and keeps nothing.
type discardFile struct{}

func (discardFile) Close() error                           { return nil }
func (discardFile) Read([]byte) (int, error)               { return 0, io.EOF }
func (discardFile) ReadAt([]byte, int64) (int, error)      { return 0, io.EOF }
func (discardFile) Write(p []byte) (int, error)            { return len(p), nil }
func (discardFile) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discardFile) Preallocate(int64, int64) error         { return nil }
func (discardFile) Stat() (vfs.FileInfo, error)            { return nil, errIndexFenced } // Pebble does not stat its MANIFEST
func (discardFile) Sync() error                            { return nil }
func (discardFile) SyncTo(int64) (bool, error)             { return true, nil }
func (discardFile) SyncData() error                        { return nil }
func (discardFile) Prefetch(int64, int64) error            { return nil }
func (discardFile) Fd() uintptr                            { return vfs.InvalidFd }
