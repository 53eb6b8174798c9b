package heapkv

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Files and directories the database creates belong to its owner alone
// by default (Options.FileMode 0600; directories 0700): values are user
// data, and a LOCK file others can read is one they can take a read lock
// on (lockDirShared), keeping writers out. Only the operating system's
// file system has modes; modeFS wraps it so that every file created
// through db.fs gets Options.FileMode, set on the open descriptor before
// anything is written to it, and every directory the directory mode. The
// process's umask still applies to directories (MkdirAll's mode) but not
// to files (fchmod).

// DefaultFileMode is the mode of the files a database creates when
// Options.FileMode is zero.
const DefaultFileMode fs.FileMode = 0o600

// dirMode is the mode of directories beside files of mode m: searchable
// by whoever may read the files.
func dirMode(m fs.FileMode) fs.FileMode { return m | (m&0o444)>>2 }

// modeFS is a file system whose new files and directories get modes.
type modeFS struct {
	vfs.FS
	file, dir fs.FileMode
}

// withFileMode returns fsys creating files of mode m, if it is the
// operating system's file system; others have no modes.
func withFileMode(fsys vfs.FS, m fs.FileMode) vfs.FS {
	if fsys != vfs.Default {
		return fsys
	}
	return modeFS{FS: fsys, file: m, dir: dirMode(m)}
}

// Create implements vfs.FS.
func (m modeFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := m.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return m.chmod(f, name)
}

// OpenReadWrite implements vfs.FS; it sets the mode only of a file it
// creates.
func (m modeFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	_, statErr := m.FS.Stat(name)
	f, err := m.FS.OpenReadWrite(name, c, opts...)
	if err != nil || !oserror.IsNotExist(statErr) {
		return f, err
	}
	return m.chmod(f, name)
}

// Lock implements vfs.FS; it sets the mode of a lock file it creates
// (Pebble's index/LOCK).
func (m modeFS) Lock(name string) (io.Closer, error) {
	_, statErr := m.FS.Stat(name)
	l, err := m.FS.Lock(name)
	if err != nil || !oserror.IsNotExist(statErr) {
		return l, err
	}
	if err := os.Chmod(name, m.file); err != nil {
		l.Close()
		return nil, fmt.Errorf("heapkv: set the mode of %s: %w", name, err)
	}
	return l, nil
}

// MkdirAll implements vfs.FS with the directory mode.
func (m modeFS) MkdirAll(dir string, _ fs.FileMode) error { return m.FS.MkdirAll(dir, m.dir) }

func (m modeFS) chmod(f vfs.File, name string) (vfs.File, error) {
	if err := fchmod(f.Fd(), m.file); err != nil {
		f.Close()
		return nil, fmt.Errorf("heapkv: set the mode of %s: %w", name, err)
	}
	return f, nil
}
