package heapkv

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// The space reserve.
//
// A database that fills its file system must still be able to close, open,
// take deletes and run the checkpoint that gives their space back; each of
// those writes (a log segment, an index table, a MANIFEST, an allocation
// snapshot). So the database keeps DiskReserve bytes of the file system
// allocated to a file, RESERVE in its directory, and every file it writes
// goes through vfs.OnDiskFull: the first write that meets ENOSPC releases
// the reserve (onDiskFull), then retries once, and so gets through.
//
// From then on the database is in the disk-full state (DB.reserve.diskFull): it
// goes on serving reads, deletes and checkpoints, and takes writes that
// store values only while at least half the reserve's size is free on the
// file system (roomForValues): values that reuse the heap blocks of deleted
// ones take no new space, and the other half is kept for the operations
// that give space back. Beyond that, such writes fail with ErrDiskFull
// (wrapping ENOSPC). Checkpoints run after every DiskReserve/8 bytes of log
// instead of CheckpointLogBytes, so the log gives its space back sooner. Each checkpoint, and the
// background loop once a second, try to make the reserve again, and succeeds once DiskReserve bytes (and an eighth
// more, for the writes that follow) are free; that ends the state. A write
// that meets ENOSPC while the reserve is already released fails as any
// I/O error does (a failed log write fails the database; reopen).
//
// The state survives a restart in the file itself:
//
//	RESERVE absent        never made (a new database, or no room for it):
//	                      Open and checkpoints try to make it; no refusals.
//	RESERVE of 0 bytes    released by a full disk: values are refused until
//	                      it is made again.
//	RESERVE of 16 bytes   made: "heapkv reserve\n" and a version byte,
//	                      then DiskReserve bytes allocated past the end of
//	                      the file (fallocate with FALLOC_FL_KEEP_SIZE), so
//	                      making it costs no data writes.
//
// Releasing truncates the file to 0 bytes, which frees its blocks and keeps
// the record that it was released. On file systems without fallocate the
// reserve is written with zeros (and is then DiskReserve bytes long).

// reserveHeader starts a made reserve.
var reserveHeader = []byte("heapkv reserve\n\x01")

// reserveChunk is the size of the zero writes used when fallocate is not
// supported.
const reserveChunk = 1 << 20

// onDiskFull runs when a write of the database first meets ENOSPC, with
// every other write of the database's file system held back (see
// vfs.OnDiskFull): it must use the unwrapped file system.
func (db *DB) onDiskFull() {
	db.releaseReserve()
}

// releaseReserve gives the reserve's space back to the file system and
// enters the disk-full state.
func (db *DB) releaseReserve() {
	if db.rawFS == nil {
		return
	}
	db.reserve.mu.Lock()
	defer db.reserve.mu.Unlock()
	if db.reserve.diskFull.Swap(true) {
		return
	}
	fs := db.rawFS
	p := fs.PathJoin(db.dir, reserveFileName)
	if _, err := fs.Stat(p); err != nil {
		db.logger.Warn("file system full and no space reserve to release; new values are refused until a checkpoint can make one", "err", err)
		return
	}
	db.logger.Warn("file system full: released the space reserve; new values are refused until it can be made again",
		"reserve", db.opts.DiskReserve)
	f, err := fs.Create(p, vfs.WriteCategoryUnspecified) // truncates: frees the blocks
	if err == nil {
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		db.logger.Error("releasing the space reserve", "path", p, "err", err)
		_ = fs.Remove(p)
	}
}

// openReserve sets the disk-full state from the reserve file at Open and
// makes the reserve if it can.
func (db *DB) openReserve() {
	p := db.rawFS.PathJoin(db.dir, reserveFileName)
	if fi, err := db.rawFS.Stat(p); err == nil && fi.Size() == 0 {
		db.reserve.diskFull.Store(true)
	}
	db.makeReserve()
}

// makeReserve makes the reserve if the options ask for one, it is not made
// and the file system has room for it; it ends the disk-full state once the
// reserve is made. Failures are logged: a database without its reserve
// works, it only loses its cushion.
func (db *DB) makeReserve() {
	db.reserve.mu.Lock()
	defer db.reserve.mu.Unlock()
	fs, size := withFileMode(db.rawFS, db.opts.FileMode), db.opts.DiskReserve
	p := fs.PathJoin(db.dir, reserveFileName)
	fi, err := fs.Stat(p)
	if size <= 0 {
		if err == nil {
			if err := fs.Remove(p); err != nil {
				db.logger.Warn("removing the space reserve (DiskReserve is off)", "path", p, "err", err)
			}
		}
		db.reserve.diskFull.Store(false)
		return
	}
	if err == nil && fi.Size() > 0 {
		db.reserve.diskFull.Store(false)
		return
	}
	if du, err := fs.GetDiskUsage(db.dir); err == nil && du.AvailBytes < uint64(size+size/8) {
		if !db.reserve.diskFull.Load() {
			db.logger.Warn("not enough free space for the space reserve", "reserve", size, "available", du.AvailBytes)
		}
		return
	}
	if err := writeReserve(fs, p, size); err != nil {
		db.logger.Warn("could not make the space reserve", "path", p, "err", err)
		return
	}
	if db.reserve.diskFull.Swap(false) {
		db.logger.Info("space reserve made again; new values are accepted")
	}
}

// writeReserve makes the reserve at path: written as path.tmp, synced and
// renamed, so that a RESERVE with its header is whole.
func writeReserve(fs vfs.FS, path string, size int64) error {
	tmp := path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	// A copy: a vfs.File may scribble on what it is given (MemFS does
	// under the race detector).
	_, err = f.Write(slices.Clone(reserveHeader))
	if err == nil {
		if err = f.Preallocate(int64(len(reserveHeader)), size); err != nil {
			zeros := make([]byte, reserveChunk)
			for off := int64(len(reserveHeader)); off < size && err == nil; off += reserveChunk {
				_, err = f.WriteAt(zeros[:min(reserveChunk, size-off)], off)
			}
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err == nil {
		err = vfsutil.SyncDir(fs, fs.PathDir(path))
	}
	if err != nil {
		_ = fs.Remove(tmp)
		return fmt.Errorf("make %s: %w", path, err)
	}
	return nil
}

// roomForValues reports whether, in the disk-full state, a write that
// stores values may go ahead: at least half the reserve's size is free.
func (db *DB) roomForValues() bool {
	du, err := db.rawFS.GetDiskUsage(db.dir)
	return err != nil || du.AvailBytes >= uint64(db.opts.DiskReserve/2)
}

// errDiskFull is what a write refused in the disk-full state returns.
func errDiskFull() error {
	return fmt.Errorf("%w: less than half the space reserve is free; delete keys and checkpoint, or free space on the file system: %w",
		ErrDiskFull, syscall.ENOSPC)
}

// diskError adds ErrDiskFull to an error caused by ENOSPC.
func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrDiskFull) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}
