// Package mirror presents the value heap as a block device kept on one or
// more replica files. Callers address it in blocks of a fixed size; the
// package knows nothing of keys, values, allocation or the log.
//
// A replica is one file. Its first block is a header; block b of the device
// lives at byte offset (b+1)*BlockSize:
//
//	+-----------------------------+---------+---------+-----
//	| header block                | block 0 | block 1 | ...
//	| filehdr (32 B) | replica    |         |         |
//	| header (see header.go)      |         |         |
//	+-----------------------------+---------+---------+-----
//	0                          BlockSize  2*BlockSize
//
// The file grows on demand as blocks are written (reading an unwritten block
// returns zeros). Every write goes to every writable replica; reads are served
// by the first readable one.
package mirror

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// ErrCorrupt marks a replica file whose header cannot be trusted.
var ErrCorrupt = errors.New("mirror: corrupt replica")

// ErrNoReplica is returned when no replica can take a write or serve a read.
var ErrNoReplica = errors.New("mirror: no usable replica")

// ErrClosed is returned by every method after Close.
var ErrClosed = errors.New("mirror: closed")

// Config describes the device shared by all replicas.
type Config struct {
	FS        vfs.FS
	DBID      filehdr.DBID
	BlockSize int
	Logger    *slog.Logger // nil means slog.Default()
}

// Set is the heap device: one or more replica files holding the same blocks.
// Its methods are safe for concurrent use.
type Set struct {
	cfg      Config
	replicas []*replica

	// syncMu serialises Sync calls so that a caller that arrives while a
	// sync is running gets a sync that started after its own writes.
	syncMu sync.Mutex

	syncs  atomic.Int64 // completed fsyncs across replicas
	closed atomic.Bool
}

// replica is one file of the set.
type replica struct {
	id   int
	path string
	f    vfs.File
}

// Create makes new replica files at paths (which must not exist), writes and
// syncs their headers, syncs their directories, and returns the open set.
func Create(cfg Config, paths []string) (*Set, error) {
	s, err := newSet(cfg, paths)
	if err != nil {
		return nil, err
	}
	for i, p := range paths {
		if _, err := cfg.FS.Stat(p); err == nil {
			s.closeFiles()
			return nil, fmt.Errorf("mirror: create replica %d: %s already exists", i, p)
		}
		f, err := cfg.FS.Create(p, vfs.WriteCategoryUnspecified)
		if err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("mirror: create replica %d: %w", i, err)
		}
		// Reopen read-write so that WriteAt is supported.
		if err := f.Close(); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("mirror: create replica %d: %w", i, err)
		}
		if f, err = cfg.FS.OpenReadWrite(p, vfs.WriteCategoryUnspecified); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("mirror: create replica %d: %w", i, err)
		}
		s.replicas = append(s.replicas, &replica{id: i, path: p, f: f})
		hdr := encodeHeader(cfg, i)
		if _, err := f.WriteAt(hdr, 0); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("mirror: write header of %s: %w", p, err)
		}
		if err := f.Sync(); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("mirror: sync header of %s: %w", p, err)
		}
		if err := syncDir(cfg.FS, p); err != nil {
			s.closeFiles()
			return nil, err
		}
	}
	return s, nil
}

// Open opens existing replica files and checks that each belongs to
// cfg.DBID and has cfg.BlockSize. A missing or foreign file is an error
// wrapping ErrCorrupt that names the file; nothing is written.
func Open(cfg Config, paths []string) (*Set, error) {
	s, err := newSet(cfg, paths)
	if err != nil {
		return nil, err
	}
	for i, p := range paths {
		// OpenReadWrite creates a missing file: look first.
		if _, err := cfg.FS.Stat(p); err != nil {
			s.closeFiles()
			if oserror.IsNotExist(err) {
				return nil, fmt.Errorf("%w: replica %d: %s is missing", ErrCorrupt, i, p)
			}
			return nil, fmt.Errorf("mirror: stat replica %d: %w", i, err)
		}
		f, err := cfg.FS.OpenReadWrite(p, vfs.WriteCategoryUnspecified)
		if err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("mirror: open replica %d: %w", i, err)
		}
		s.replicas = append(s.replicas, &replica{id: i, path: p, f: f})
		if err := checkHeader(cfg, f, i); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, p, err)
		}
	}
	return s, nil
}

func newSet(cfg Config, paths []string) (*Set, error) {
	if cfg.FS == nil {
		return nil, errors.New("mirror: Config.FS is nil")
	}
	if cfg.BlockSize < headerSize || cfg.BlockSize&(cfg.BlockSize-1) != 0 {
		return nil, fmt.Errorf("mirror: block size %d is not a power of two >= %d", cfg.BlockSize, headerSize)
	}
	if len(paths) == 0 {
		return nil, errors.New("mirror: no replica paths")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Set{cfg: cfg}, nil
}

func syncDir(fs vfs.FS, p string) error {
	d, err := fs.OpenDir(fs.PathDir(p))
	if err != nil {
		return fmt.Errorf("mirror: open directory of %s: %w", p, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("mirror: sync directory of %s: %w", p, err)
	}
	return nil
}

func (s *Set) offset(block uint64) int64 {
	return int64(block+1) * int64(s.cfg.BlockSize)
}

// BlockSize returns the device's block size in bytes.
func (s *Set) BlockSize() int { return s.cfg.BlockSize }

// Replicas returns the number of replica files.
func (s *Set) Replicas() int { return len(s.replicas) }

// WriteAt writes p starting at the first byte of block on every replica. p
// need not be a whole number of blocks; the rest of the last block is left
// as it was.
func (s *Set) WriteAt(p []byte, block uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	off := s.offset(block)
	for _, r := range s.replicas {
		if _, err := r.f.WriteAt(p, off); err != nil {
			return fmt.Errorf("mirror: write %d bytes at block %d of %s: %w", len(p), block, r.path, err)
		}
	}
	return nil
}

// ReadAt fills p from the blocks starting at block. Blocks never written
// read as zeros.
func (s *Set) ReadAt(p []byte, block uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	r := s.replicas[0]
	n, err := r.f.ReadAt(p, s.offset(block))
	if err != nil && !(errors.Is(err, io.EOF)) {
		return fmt.Errorf("mirror: read %d bytes at block %d of %s: %w", len(p), block, r.path, err)
	}
	clear(p[n:])
	return nil
}

// Sync makes every completed WriteAt durable on every replica.
func (s *Set) Sync() error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	for _, r := range s.replicas {
		if err := r.f.SyncData(); err != nil {
			return fmt.Errorf("mirror: sync %s: %w", r.path, err)
		}
		s.syncs.Add(1)
	}
	return nil
}

// Syncs returns how many replica fsyncs have completed.
func (s *Set) Syncs() int64 { return s.syncs.Load() }

// FileSize returns the size in bytes of the first replica's file.
func (s *Set) FileSize() (int64, error) {
	fi, err := s.replicas[0].f.Stat()
	if err != nil {
		return 0, fmt.Errorf("mirror: stat %s: %w", s.replicas[0].path, err)
	}
	return fi.Size(), nil
}

// Close closes every replica file. It does not sync.
func (s *Set) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	return s.closeFiles()
}

func (s *Set) closeFiles() error {
	var first error
	for _, r := range s.replicas {
		if err := r.f.Close(); err != nil && first == nil {
			first = fmt.Errorf("mirror: close %s: %w", r.path, err)
		}
	}
	s.replicas = nil
	return first
}
