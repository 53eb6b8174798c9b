// Package testfs wraps a vfs.FS so that tests can observe, count and act on
// every write-class operation before it happens. Crash tests use it to take
// a vfs.MemFS CrashClone just before the k-th write of a workload. The hook
// only observes: it cannot change an operation's result (for error
// injection use pebble's vfs/errorfs).
//
// Write-class operations are the ones that can change what a crash leaves
// behind: Create, Link, OpenReadWrite, ReuseForWrite, Remove, RemoveAll,
// Rename, MkdirAll, Lock (it creates the lock file), and on files Write,
// WriteAt, Preallocate, Sync, SyncData and SyncTo (directory syncs included).
package testfs

import (
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Kind names a write-class operation.
type Kind uint8

// The write-class operations.
const (
	Create Kind = iota
	Link
	OpenReadWrite
	ReuseForWrite
	Remove
	RemoveAll
	Rename
	MkdirAll
	Lock
	Write
	WriteAt
	Preallocate
	Sync
	SyncData
	SyncTo
)

var kindNames = [...]string{"Create", "Link", "OpenReadWrite", "ReuseForWrite", "Remove", "RemoveAll",
	"Rename", "MkdirAll", "Lock", "Write", "WriteAt", "Preallocate", "Sync", "SyncData", "SyncTo"}

// String returns the kind's name (Create, Write, Sync, ...).
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(?)"
}

// IsSync reports whether k may make earlier writes durable.
func (k Kind) IsSync() bool { return k == Sync || k == SyncData || k == SyncTo }

// Op is one write-class operation, reported to the hook before it runs.
type Op struct {
	N    int64 // 1-based position among the write-class ops of this FS
	Kind Kind
	Path string
}

// FS is a vfs.FS that calls a hook before every write-class operation.
type FS struct {
	inner vfs.FS
	hook  func(Op)
	n     atomic.Int64
	// serial, when set, is held across each write-class operation and its
	// hook (WrapSerial).
	serial *sync.Mutex
}

var _ vfs.FS = (*FS)(nil)

// Wrap returns inner wrapped so that hook (which may be nil, to count only)
// runs before each write-class operation. The hook may be called from many
// goroutines at once and must not call back into the FS it wraps.
func Wrap(inner vfs.FS, hook func(Op)) *FS { return &FS{inner: inner, hook: hook} }

// WrapSerial is Wrap, except that write-class operations run one at a
// time, each together with its hook. A hook that takes a vfs.MemFS
// CrashClone needs it when the database writes from several goroutines:
// MemFS takes its tree lock and its clone lock in both orders (Link walks
// the tree, then takes the clone lock; other mutations take the clone lock
// first), so a CrashClone from one goroutine while another is inside such
// an operation can deadlock.
func WrapSerial(inner vfs.FS, hook func(Op)) *FS {
	return &FS{inner: inner, hook: hook, serial: new(sync.Mutex)}
}

// Ops returns how many write-class operations have started so far.
func (fs *FS) Ops() int64 { return fs.n.Load() }

// before runs the hook of an operation about to start; the caller calls
// the function it returns once the operation is done.
func (fs *FS) before(k Kind, path string) (done func()) {
	done = func() {}
	if fs.serial != nil {
		fs.serial.Lock()
		done = fs.serial.Unlock
	}
	n := fs.n.Add(1)
	if fs.hook != nil {
		fs.hook(Op{N: n, Kind: k, Path: path})
	}
	return done
}

func (fs *FS) wrap(f vfs.File, path string, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &file{File: f, fs: fs, path: path}, nil
}

// Create implements vfs.FS.
func (fs *FS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	defer fs.before(Create, name)()
	f, err := fs.inner.Create(name, c)
	return fs.wrap(f, name, err)
}

// Link implements vfs.FS.
func (fs *FS) Link(oldname, newname string) error {
	defer fs.before(Link, newname)()
	return fs.inner.Link(oldname, newname)
}

// Open implements vfs.FS.
func (fs *FS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.inner.Open(name)
	if err != nil {
		return nil, err
	}
	wf, _ := fs.wrap(f, name, nil)
	for _, o := range opts {
		o.Apply(wf)
	}
	return wf, nil
}

// OpenReadWrite implements vfs.FS.
func (fs *FS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	defer fs.before(OpenReadWrite, name)()
	f, err := fs.inner.OpenReadWrite(name, c)
	if err != nil {
		return nil, err
	}
	wf, _ := fs.wrap(f, name, nil)
	for _, o := range opts {
		o.Apply(wf)
	}
	return wf, nil
}

// OpenDir implements vfs.FS.
func (fs *FS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.inner.OpenDir(name)
	return fs.wrap(f, name, err)
}

// Remove implements vfs.FS.
func (fs *FS) Remove(name string) error {
	defer fs.before(Remove, name)()
	return fs.inner.Remove(name)
}

// RemoveAll implements vfs.FS.
func (fs *FS) RemoveAll(name string) error {
	defer fs.before(RemoveAll, name)()
	return fs.inner.RemoveAll(name)
}

// Rename implements vfs.FS.
func (fs *FS) Rename(oldname, newname string) error {
	defer fs.before(Rename, newname)()
	return fs.inner.Rename(oldname, newname)
}

// ReuseForWrite implements vfs.FS.
func (fs *FS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	defer fs.before(ReuseForWrite, newname)()
	f, err := fs.inner.ReuseForWrite(oldname, newname, c)
	return fs.wrap(f, newname, err)
}

// MkdirAll implements vfs.FS.
func (fs *FS) MkdirAll(dir string, perm os.FileMode) error {
	defer fs.before(MkdirAll, dir)()
	return fs.inner.MkdirAll(dir, perm)
}

// Lock implements vfs.FS.
func (fs *FS) Lock(name string) (io.Closer, error) {
	defer fs.before(Lock, name)()
	return fs.inner.Lock(name)
}

// List implements vfs.FS.
func (fs *FS) List(dir string) ([]string, error) { return fs.inner.List(dir) }

// Stat implements vfs.FS.
func (fs *FS) Stat(name string) (vfs.FileInfo, error) { return fs.inner.Stat(name) }

// PathBase implements vfs.FS.
func (fs *FS) PathBase(p string) string { return fs.inner.PathBase(p) }

// PathJoin implements vfs.FS.
func (fs *FS) PathJoin(elem ...string) string { return fs.inner.PathJoin(elem...) }

// PathDir implements vfs.FS.
func (fs *FS) PathDir(p string) string { return fs.inner.PathDir(p) }

// GetDiskUsage implements vfs.FS.
func (fs *FS) GetDiskUsage(path string) (vfs.DiskUsage, error) { return fs.inner.GetDiskUsage(path) }

// Unwrap implements vfs.FS.
func (fs *FS) Unwrap() vfs.FS { return fs.inner }

// file wraps a vfs.File; reads pass through.
type file struct {
	vfs.File
	fs   *FS
	path string
}

func (f *file) Write(p []byte) (int, error) {
	defer f.fs.before(Write, f.path)()
	return f.File.Write(p)
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	defer f.fs.before(WriteAt, f.path)()
	return f.File.WriteAt(p, off)
}

func (f *file) Preallocate(off, n int64) error {
	defer f.fs.before(Preallocate, f.path)()
	return f.File.Preallocate(off, n)
}

func (f *file) Sync() error {
	defer f.fs.before(Sync, f.path)()
	return f.File.Sync()
}

func (f *file) SyncData() error {
	defer f.fs.before(SyncData, f.path)()
	return f.File.SyncData()
}

func (f *file) SyncTo(length int64) (bool, error) {
	defer f.fs.before(SyncTo, f.path)()
	return f.File.SyncTo(length)
}
