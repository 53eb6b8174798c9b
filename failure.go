package heapkv

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// How the database fails (fail-stop).
//
// An I/O error that leaves the log, the heap or the index in a state the
// database cannot vouch for, damage Pebble finds in the index, and an
// ENOSPC that reaches the log or the index all end the same way: the
// first such error is latched
// (failLatch), every later write returns an error wrapping ErrFailed and
// that first cause, reads of intact data go on, and Close returns promptly
// without the checkpoint it would otherwise write. Reopening recovers from
// what is durable: the index as of the last checkpoint plus the log.
//
// The index needs one more step. Pebble reports its own fatal conditions
// (a failed MANIFEST write or sync, a flush or compaction that cannot
// write its table, corruption found while reading) through its logger's
// Fatalf and its EventListener, and after a failed MANIFEST write it may
// keep appending edits behind a torn record that a later Open never reads.
// If it then deleted a compaction's inputs, the index would reopen naming
// tables that are gone. So the first index failure raises a fence in the
// file system Pebble writes through (fencedFS): from then on every create,
// write, sync, rename and remove under index/ fails, and the index on disk
// stays exactly as the last successful MANIFEST edit left it. Pebble retries
// a failed flush or compaction at once and forever; its BackgroundError
// handler slows the retries of a fenced index to one per
// fencedRetryInterval, so a failed database does not spin a core while it
// waits to be closed.
//
// A full file system need not get that far: the database keeps a space
// reserve (reserve.go), and the first ENOSPC releases it and retries, so
// that the write, Close, the next Open, the deletes that follow and the
// checkpoint that returns their space have room to write.

// fencedRetryInterval is how often Pebble may retry a flush or compaction
// once the index is fenced.
const fencedRetryInterval = 200 * time.Millisecond

// failLatch holds the first failure of the database.
type failLatch struct {
	err  atomic.Pointer[error]
	once sync.Once
	ch   chan struct{} // closed when err is set; see done
}

// done returns a channel closed once the database has failed.
func (l *failLatch) done() <-chan struct{} { return l.channel() }

func (l *failLatch) channel() chan struct{} {
	l.once.Do(func() { l.ch = make(chan struct{}) })
	return l.ch
}

// fail records err as the database's failure if it is the first one, and
// returns the error a write refused because of it returns: ErrFailed
// wrapping the first cause. A cause that is an ENOSPC also wraps
// ErrDiskFull, and releases the space reserve.
func (db *DB) fail(err error) error {
	if err = diskError(err); errors.Is(err, ErrDiskFull) {
		db.releaseReserve()
	}
	if db.failure.err.CompareAndSwap(nil, &err) {
		close(db.failure.channel())
		db.logger.Error("database failed; it refuses writes until reopened", "err", err)
	}
	return db.failed()
}

// failed returns nil, or ErrFailed wrapping the database's first failure.
func (db *DB) failed() error {
	if p := db.failure.err.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *p)
	}
	return nil
}

// failIndex fails the database for an error Pebble reported as fatal and
// fences the index's files.
func (db *DB) failIndex(err error) {
	db.indexFence.Store(true)
	if pebble.IsCorruptionError(err) && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	db.fail(fmt.Errorf("heapkv: index: %w", err))
}

// indexError wraps an error of an index read, adding ErrCorrupt when Pebble
// found damage (pebble.IsCorruptionError: Pebble marks corruption with
// cockroachdb/errors, which the standard errors.Is does not see).
func indexError(what string, err error) error {
	if pebble.IsCorruptionError(err) && !errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%w: index: %s: %w", ErrCorrupt, what, err)
	}
	return fmt.Errorf("heapkv: index: %s: %w", what, err)
}

// indexEventListener puts the database into the failed state on Pebble's
// fatal events instead of Pebble's default, which calls Logger.Fatalf.
func (db *DB) indexEventListener() *pebble.EventListener {
	return &pebble.EventListener{
		FlushBegin: func(pebble.FlushInfo) { db.beforeIndexFlush() },
		BackgroundError: func(err error) {
			if db.indexFence.Load() {
				if db.indexAbandoned.Load() {
					// Nobody will close this index (openPebble gave up
					// on it): park its retrying goroutine for good.
					var never chan struct{}
					<-never
				}
				// Pebble calls this with its mutex held and retries at
				// once; a fenced index cannot succeed, so slow it down.
				time.Sleep(fencedRetryInterval)
				return
			}
			db.failIndex(err)
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			db.failIndex(fmt.Errorf("%w: %s: %w", ErrCorrupt, info.Path, info.Details))
		},
	}
}

// errIndexFenced is what every write under index/ returns once the index
// has failed.
var errIndexFenced = fmt.Errorf("%w: index is read-only after a fatal index error", ErrFailed)

// waitIndex waits for ch (a Pebble completion channel) or for the database
// to fail, whichever comes first.
func (db *DB) waitIndex(ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-db.failure.done():
		return db.failed()
	}
}

// fencedFS is the file system Pebble writes through, with the fence:
// while *fence is set, every write-class call fails with errIndexFenced.
type fencedFS struct {
	vfs.FS
	fence *atomic.Bool
}

func (f fencedFS) check() error { return fenceError(f.fence) }

// fenceError is errIndexFenced once fence is set, else nil.
func fenceError(fence *atomic.Bool) error {
	if fence.Load() {
		return errIndexFenced
	}
	return nil
}

func (f fencedFS) wrap(file vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return fencedFile{File: file, fence: f.fence}, nil
}

// Create fails once fenced; the file it returns checks the fence on every write.
func (f fencedFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.wrap(f.FS.Create(name, category))
}

// OpenReadWrite fails once fenced; the file it returns checks the fence.
func (f fencedFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.wrap(f.FS.OpenReadWrite(name, category, opts...))
}

// OpenDir returns a directory handle whose Sync checks the fence.
func (f fencedFS) OpenDir(name string) (vfs.File, error) {
	return f.wrap(f.FS.OpenDir(name))
}

// Link fails once fenced.
func (f fencedFS) Link(oldname, newname string) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.FS.Link(oldname, newname)
}

// Remove fails once fenced, so no table a torn MANIFEST still names is deleted.
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
	return f.wrap(f.FS.ReuseForWrite(oldname, newname, category))
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

// fencedFile is a file of a fencedFS.
type fencedFile struct {
	vfs.File
	fence *atomic.Bool
}

func (f fencedFile) check() error { return fenceError(f.fence) }

// Write fails once fenced.
func (f fencedFile) Write(p []byte) (int, error) {
	if err := f.check(); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

// WriteAt fails once fenced.
func (f fencedFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.check(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

// Preallocate fails once fenced.
func (f fencedFile) Preallocate(off, n int64) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.File.Preallocate(off, n)
}

// Sync fails once fenced.
func (f fencedFile) Sync() error {
	if err := f.check(); err != nil {
		return err
	}
	return f.File.Sync()
}

// SyncData fails once fenced.
func (f fencedFile) SyncData() error {
	if err := f.check(); err != nil {
		return err
	}
	return f.File.SyncData()
}

// SyncTo fails once fenced.
func (f fencedFile) SyncTo(length int64) (fullSync bool, err error) {
	if err := f.check(); err != nil {
		return false, err
	}
	return f.File.SyncTo(length)
}
