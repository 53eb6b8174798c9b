package heapkv

import (
	"cmp"
	"fmt"
	"io"
	"io/fs"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/wal"
)

// Read-only handles (Options.ReadOnly). A read-only Open reads what a
// read-write one reads and writes nothing: the directory's LOCK file is
// locked shared (lockDirShared), the heap replicas are opened read-only
// (mirror.Config.ReadOnly), the index is opened with Pebble's ReadOnly and
// no lock of its own, and no goroutine runs in the background. It needs a
// database whose log holds nothing after its last checkpoint, as every
// Close leaves it: replaying records would mean writing the index (and
// perhaps carried values to the heap), so a database that crashed is
// refused with ErrReadOnly until a read-write Open recovers it. (Replaying
// into memory instead would keep a second index in memory for the life of
// the handle; left for when a user needs read-only access to a crashed
// database without recovering it.)
//
// Every write path checks readOnly first (apply, BeginTxn, Checkpoint,
// AttachReplica, DetachReplica, Scrub); reads need nothing: db.applied is
// the checkpoint's LSN and never moves, so pins, snapshots and the entry
// cache work as they do on a quiet read-write handle.

// openReadOnly is Open with Options.ReadOnly.
func openReadOnly(fsys vfs.FS, dir string, o Options) (_ *DB, err error) {
	if _, err := fsys.Stat(dir); err != nil {
		return nil, fmt.Errorf("heapkv: read-only open of %s: %w", dir, err)
	}
	lock, err := lockDirShared(fsys, dir)
	if err != nil {
		return nil, err
	}
	db := newDB(fsys, dir, o, lock)
	defer func() {
		if err != nil {
			db.closeFiles()
		}
	}()
	if err := refuseUnfinishedIncrement(fsys, dir, &o); err != nil {
		return nil, err
	}
	// No encoder: a read-only handle writes no value.
	if err := db.recoverReadOnly(); err != nil {
		return nil, err
	}
	if err := db.startCaches(); err != nil {
		return nil, err
	}
	return db, nil
}

// recoverReadOnly is recover for a read-only handle: it opens what
// recover opens, in the same order, and checks that the log holds nothing
// to replay.
func (db *DB) recoverReadOnly() error {
	seqs, err := listManifests(db.fs, db.dir)
	if err != nil {
		return err
	}
	if len(seqs) == 0 {
		return fmt.Errorf("%w: %s holds no database (no MANIFEST): %w", ErrReadOnly, db.dir, fs.ErrNotExist)
	}
	m, err := db.openLast(seqs[len(seqs)-1])
	if err != nil {
		return err
	}
	var first base.LSN // the first record after the checkpoint, if any
	last, err := wal.Replay(db.walOptions(), m.checkpointLSN, func(lsn base.LSN, _ []byte) error {
		first = cmp.Or(first, lsn)
		return nil
	})
	if err != nil {
		return fmt.Errorf("heapkv: check log: %w", err)
	}
	if last > m.checkpointLSN {
		return fmt.Errorf("%w: %s was not closed: its log holds records %d-%d after the last checkpoint (%d); open it read-write once to recover them",
			ErrReadOnly, db.dir, first, last, m.checkpointLSN)
	}
	if err := db.openIndexReadOnly(&m); err != nil {
		return err
	}
	db.applied.Store(m.checkpointLSN)
	db.pipe.appended = m.checkpointLSN
	return nil
}

// openIndexReadOnly opens the index with Pebble's ReadOnly, checked
// against the checkpoint as a read-write open checks it. Pebble would lock
// index/LOCK exclusively (and create it); the database's own shared lock
// excludes writers, so Pebble's lock is skipped and several read-only
// handles can hold the index at once.
func (db *DB) openIndexReadOnly(m *manifest) error {
	cache := pebble.NewCache(indexCacheCapacity(&db.opts))
	defer cache.Unref()
	popts := db.indexOptions(cache, false, true)
	popts.FS = noLockFS{popts.FS}
	idx, err := db.openPebble(db.fs.PathJoin(db.dir, indexDirName), popts)
	if err != nil {
		return indexOpenError(err)
	}
	if err := db.checkIndexMarker(idx, m); err != nil {
		_ = idx.Close()
		return err
	}
	db.index, db.indexOpts = idx, popts
	return nil
}

// noLockFS is a file system whose Lock takes no lock and creates nothing.
type noLockFS struct{ vfs.FS }

func (noLockFS) Lock(string) (io.Closer, error) { return nopCloser{}, nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// errIfReadOnly returns an error wrapping ErrReadOnly, naming what was
// refused, if the database was opened read-only.
func (db *DB) errIfReadOnly(what string) error {
	if db.opts.ReadOnly {
		return fmt.Errorf("%w: %s %s", ErrReadOnly, what, db.dir)
	}
	return nil
}
