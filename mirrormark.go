package heapkv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"

	"github.com/cockroachdb/errors/oserror"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/mirror"
)

// Mirror markers. A mirror's directory holds, next to its heap file, a
// small file MIRROR naming the database and the replica the directory
// belongs to. It is written durably (the file, then its directory) when the
// mirror is created or first attached, before its heap file. A mirror's heap
// file is created only in a directory that holds the mirror's own marker,
// unless AttachReplica (an explicit request) is called: when a mirror's disk
// is not mounted, its mount point is an empty directory on another file
// system, and filling it would put the replica on the wrong disk and report
// it in sync. Such a mirror stays stale ("replica file missing") until its
// disk is back or AttachReplica is called.
//
// Mirrors made before markers existed have a heap file and no marker: the
// heap file's header (database ID, replica id, block size; checked by
// mirror.Open and Reopen) proves the directory theirs, and their marker is
// written then. The heap in the database directory (replica 0) has no
// marker: the database's own files identify that directory.
//
// Wire format (never change; bump filehdr.Version instead):
//
//	+-------------------+------------+---------+
//	| filehdr.Header    | replica id | CRC-32C |
//	| 32 B (kind "MR")  | u32 LE     | u32 LE  |
//	+-------------------+------------+---------+
//	0                   32           36        40
//
// The header carries the database ID (with its own CRC over bytes 0..28);
// the trailing CRC covers bytes 32..36.
const mirrorMarkerSize = filehdr.Size + 8

// errUnmarked is the cause of an automatic attach that found a mirror's
// directory holding neither its heap file nor its marker.
var errUnmarked = errors.New("the directory holds neither the heap file nor the mirror's marker")

func encodeMirrorMarker(id filehdr.DBID, replica int) []byte {
	b := make([]byte, filehdr.Size, mirrorMarkerSize)
	filehdr.Header{Kind: filehdr.KindMirror, Version: filehdr.Version, DBID: id}.Encode(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(replica))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[filehdr.Size:], castagnoli))
}

// decodeMirrorMarker checks a marker (of database id, unless id is zero)
// and returns the replica it names.
func decodeMirrorMarker(b []byte, id filehdr.DBID) (int, error) {
	if _, err := filehdr.Check(b, filehdr.KindMirror, id); err != nil {
		return 0, err
	}
	if len(b) != mirrorMarkerSize {
		return 0, fmt.Errorf("mirror marker is %d bytes, want %d", len(b), mirrorMarkerSize)
	}
	body := b[filehdr.Size : mirrorMarkerSize-4]
	if got, want := binary.LittleEndian.Uint32(b[mirrorMarkerSize-4:]), crc32.Checksum(body, castagnoli); got != want {
		return 0, fmt.Errorf("mirror marker checksum %08x, want %08x", got, want)
	}
	return int(binary.LittleEndian.Uint32(body)), nil
}

// markerPath is the marker beside heap file p.
func (db *DB) markerPath(p string) string {
	return db.fs.PathJoin(db.fs.PathDir(p), mirrorMarkerName)
}

// readMirrorMarker reads the marker beside heap file p and returns the
// replica it names; found is false if there is none. A marker of another
// database, or one that does not decode, is an error wrapping ErrCorrupt
// that names it.
func (db *DB) readMirrorMarker(p string) (replica int, found bool, err error) {
	mp := db.markerPath(p)
	b, err := readFile(db.fs, mp, mirrorMarkerSize)
	switch {
	case oserror.IsNotExist(err):
		return 0, false, nil
	case err != nil && errors.As(err, new(*os.PathError)):
		return 0, true, fmt.Errorf("heapkv: read %s: %w", mp, err)
	case err != nil: // longer than a marker
		return 0, true, fmt.Errorf("%w: %s: %w", ErrCorrupt, mp, err)
	}
	if replica, err = decodeMirrorMarker(b, db.id); err != nil {
		return 0, true, fmt.Errorf("%w: %s: %w", ErrCorrupt, mp, err)
	}
	return replica, true, nil
}

// checkMirrorMarker is readMirrorMarker for replica id: a marker of
// another replica is an error wrapping ErrCorrupt too.
func (db *DB) checkMirrorMarker(p string, id int) (found bool, err error) {
	r, found, err := db.readMirrorMarker(p)
	if err == nil && found && r != id {
		err = fmt.Errorf("%w: %s is the marker of replica %d, not of replica %d", ErrCorrupt, db.markerPath(p), r, id)
	}
	return found, err
}

// writeMirrorMarker makes the marker of replica id durable beside its heap
// file p (a synced temporary file renamed into place, then a synced
// directory).
func (db *DB) writeMirrorMarker(p string, id int) error {
	if err := writeFileAtomic(db.fs, db.fs.PathDir(p), mirrorMarkerName, encodeMirrorMarker(db.id, id)); err != nil {
		return fmt.Errorf("heapkv: write %s: %w", db.markerPath(p), err)
	}
	return nil
}

// prepareNewMirror creates the directory (its last element only) of
// mirror id of a new database, whose heap file will be p, and writes the
// mirror's marker there.
func (db *DB) prepareNewMirror(p string, id int) error {
	if _, err := mkdirLeaf(db.fs, db.fs.PathDir(p), dirMode(db.opts.FileMode)); err != nil {
		return fmt.Errorf("heapkv: mirror directory of %s: %w", p, err)
	}
	return db.writeMirrorMarker(p, id)
}

// markMirror makes sure the directory of mirror id (heap file p) holds its
// marker, writing a missing one. headerChecked says that the heap file is
// open, its header checked by mirror.Open (a known mirror made before
// markers existed, or any mirror whose heap file is there): then a wrong
// marker is replaced, with a warning. Otherwise (a mirror new to the
// database, without a heap file yet) a marker of another database, or of a
// replica in the table (known replicas, ids below known), is refused; one of
// this database naming a replica not in the table (left by an Open that
// stopped before recording the mirror) is replaced.
func (db *DB) markMirror(p string, id, known int, headerChecked bool) error {
	r, found, err := db.readMirrorMarker(p)
	switch {
	case err == nil && found && r == id:
		return nil
	case !headerChecked && err != nil:
		return err
	case !headerChecked && found && r < known:
		return fmt.Errorf("%w: %s is the marker of replica %d, not of the new replica %d", ErrCorrupt, db.markerPath(p), r, id)
	case headerChecked && (err != nil || found):
		db.logger.Warn("replacing the marker of a heap mirror whose heap file is the replica's", "replica", id, "marker_replica", r, "err", err)
	}
	return db.writeMirrorMarker(p, id)
}

// autoAttachable reports whether Open's automatic attach may take stale
// replica st: its heap file is open, or (replica 0) the database directory
// holds it, or its directory holds its marker. A mirror whose directory
// holds neither its heap file nor its marker is left stale: its disk may
// not be mounted.
func (db *DB) autoAttachable(st mirror.Status) bool {
	if st.Available {
		return true
	}
	if st.ID == 0 {
		_, err := db.fs.Stat(db.fs.PathDir(st.Path))
		return err == nil
	}
	if _, err := db.fs.Stat(db.fs.PathDir(st.Path)); err != nil {
		return false // its disk is away; it stays stale
	}
	found, err := db.checkMirrorMarker(st.Path, st.ID)
	switch {
	case err != nil:
		db.logger.Warn("heap mirror not attached automatically", "replica", st.ID, "err", err)
		return false
	case !found:
		db.logger.Warn("heap mirror not attached automatically: its directory holds neither its heap file nor its marker "+
			"(a mount point without its disk?); AttachReplica uses the directory as it is",
			"replica", st.ID, "dir", db.fs.PathDir(st.Path))
		return false
	}
	return true
}

// prepareAttach runs before an attach reopens replica id's heap file p,
// which Reopen creates if it is missing. It refuses a directory holding
// another replica's or database's marker. A missing heap file is created
// only beside the replica's marker; when there is no marker, an explicit
// attach writes it first and an automatic one fails (errUnmarked). An
// existing heap file without a marker (a mirror made before markers) is
// accepted once Reopen has checked its header: markAfter says to write the
// marker then.
func (db *DB) prepareAttach(id int, p string, explicit bool) (markAfter bool, err error) {
	if id == 0 {
		return false, nil
	}
	if found, err := db.checkMirrorMarker(p, id); err != nil || found {
		return false, err
	}
	dir := db.fs.PathDir(p)
	if _, err := db.fs.Stat(dir); err != nil {
		return false, fmt.Errorf("%w: replica %d: directory of %s: %w", mirror.ErrUnavailable, id, p, err)
	}
	if _, err := db.fs.Stat(p); err == nil {
		return true, nil
	}
	if !explicit {
		return false, fmt.Errorf("%w: replica %d: %s: %w (a mount point without its disk?); AttachReplica uses the directory as it is",
			mirror.ErrUnavailable, id, dir, errUnmarked)
	}
	return false, db.writeMirrorMarker(p, id)
}
