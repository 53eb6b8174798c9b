package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// SyncMarkName is the name of the sync mark file in the log directory: a
// durable record, kept outside the segments, of an LSN a flush has made
// durable, brought up to SyncedLSN by Sync, SyncMark, rotation, Close and
// Open (SyncTo lets it lag). See "Torn tail versus corruption" and "Sync
// mark" in the package documentation.
const SyncMarkName = "SYNCED"

// Sync mark file layout. Wire format (never change; bump filehdr.Version
// instead). The file is created once at its full size and afterwards only
// overwritten in place, one slot at a time, so an update rewrites one
// already-allocated block and changes no metadata:
//
//	+-----------------+-------+--------+-------+--------+-------+
//	| filehdr.Header  | zeros | slot 0 | zeros | slot 1 | zeros |
//	| 32 B, kind "SM" |       | 24 B   |       | 24 B   |       |
//	+-----------------+-------+--------+-------+--------+-------+
//	0                 32      4096     4120    8192     8216    12288
//
// Each slot is
//
//	+--------+----------+----------+------------+
//	| crc32c | reserved | sequence | synced LSN |
//	| 4 B LE | 4 B (0)  | 8 B LE   | 8 B LE     |
//	+--------+----------+----------+------------+
//	0        4          8          16           24
//
// with the CRC-32C (Castagnoli) over bytes 4..24 of the slot. Sequence
// number s lives in slot s mod 2: updates alternate between the slots
// (ping-pong), so a torn update damages only the slot it wrote and the
// other still holds the previous mark. The slots sit in different 4 KiB
// pages (so in different 512-byte sectors, and in different pages of the
// page cache and of 4Kn drives), and neither shares a page with the
// header. A reader takes the valid slot with the higher sequence number;
// a slot is valid when its CRC matches, its reserved field is zero and its
// sequence number has the slot's parity. The zero bytes are padding and
// are not checked. A new file holds sequence 0 in slot 0 and sequence 1
// in slot 1, both with the same LSN.
const (
	markOffSlot0 = 4096
	markOffSlot1 = 8192
	markFileSize = 12288

	slotOffCRC      = 0
	slotOffReserved = 4
	slotOffSeq      = 8
	slotOffLSN      = 16
	markSlotSize    = 24
)

// markSlotOffset returns the file offset of the slot holding sequence seq.
func markSlotOffset(seq uint64) int64 {
	if seq%2 == 0 {
		return markOffSlot0
	}
	return markOffSlot1
}

// syncMark is the decoded content of a sync mark file: its newest valid
// slot.
type syncMark struct {
	seq uint64 // sequence number of the slot
	lsn LSN    // the synced LSN it records
}

// encodeMarkSlot writes a slot holding seq and lsn into dst[:markSlotSize].
func encodeMarkSlot(dst []byte, seq uint64, lsn LSN) {
	dst = dst[:markSlotSize]
	binary.LittleEndian.PutUint32(dst[slotOffReserved:], 0)
	binary.LittleEndian.PutUint64(dst[slotOffSeq:], seq)
	binary.LittleEndian.PutUint64(dst[slotOffLSN:], uint64(lsn))
	binary.LittleEndian.PutUint32(dst[slotOffCRC:], crc32.Checksum(dst[slotOffReserved:], castagnoli))
}

// decodeMarkSlot parses the slot at b (which must hold markSlotSize bytes)
// expected to have parity parity. It returns a non-empty reason if the slot
// is not valid.
func decodeMarkSlot(b []byte, parity uint64) (m syncMark, reason string) {
	b = b[:markSlotSize]
	if got, want := binary.LittleEndian.Uint32(b[slotOffCRC:]), crc32.Checksum(b[slotOffReserved:], castagnoli); got != want {
		return m, fmt.Sprintf("checksum %08x, want %08x", got, want)
	}
	if r := binary.LittleEndian.Uint32(b[slotOffReserved:]); r != 0 {
		return m, fmt.Sprintf("reserved field is %#x", r)
	}
	m = syncMark{seq: binary.LittleEndian.Uint64(b[slotOffSeq:]), lsn: LSN(binary.LittleEndian.Uint64(b[slotOffLSN:]))}
	if m.seq%2 != parity {
		return syncMark{}, fmt.Sprintf("sequence number %d in slot %d", m.seq, parity)
	}
	return m, ""
}

// encodeSyncMark returns the bytes of a new sync mark file recording lsn
// for database id.
func encodeSyncMark(id filehdr.DBID, lsn LSN) []byte {
	b := make([]byte, markFileSize)
	filehdr.Header{Kind: filehdr.KindSyncMark, Version: filehdr.Version, DBID: id}.Encode(b)
	encodeMarkSlot(b[markOffSlot0:], 0, lsn)
	encodeMarkSlot(b[markOffSlot1:], 1, lsn)
	return b
}

// decodeSyncMark parses the contents of the sync mark file at path and
// returns its newest valid slot. A file of the wrong size, with a bad
// header or one of another database (unless id is zero), with no valid
// slot, or whose newer slot records a lower LSN than the older one gives
// an error wrapping ErrCorrupt that names path.
func decodeSyncMark(b []byte, id filehdr.DBID, path string) (syncMark, error) {
	if len(b) != markFileSize {
		return syncMark{}, fmt.Errorf("%w: sync mark %s: %d bytes, want %d", ErrCorrupt, path, len(b), markFileSize)
	}
	if _, err := filehdr.Check(b, filehdr.KindSyncMark, id); err != nil {
		return syncMark{}, fmt.Errorf("%w: sync mark %s: %w", ErrCorrupt, path, err)
	}
	m0, why0 := decodeMarkSlot(b[markOffSlot0:], 0)
	m1, why1 := decodeMarkSlot(b[markOffSlot1:], 1)
	switch {
	case why0 != "" && why1 != "":
		return syncMark{}, fmt.Errorf("%w: sync mark %s: both slots are damaged (slot 0 at offset %d: %s; slot 1 at offset %d: %s)",
			ErrCorrupt, path, markOffSlot0, why0, markOffSlot1, why1)
	case why0 != "":
		return m1, nil
	case why1 != "":
		return m0, nil
	}
	newer, older := m0, m1
	if m1.seq > m0.seq {
		newer, older = m1, m0
	}
	if newer.lsn < older.lsn {
		return syncMark{}, fmt.Errorf("%w: sync mark %s: sequence %d records LSN %d, below LSN %d of the older sequence %d",
			ErrCorrupt, path, newer.seq, newer.lsn, older.lsn, older.seq)
	}
	return newer, nil
}

// readSyncMark reads the sync mark file of the log in o.Dir. A missing
// file (a log written before sync marks existed, or a new one) gives
// found == false and no error; a damaged one an error wrapping ErrCorrupt.
func readSyncMark(o Options) (m syncMark, found bool, err error) {
	path := o.FS.PathJoin(o.Dir, SyncMarkName)
	b, err := readPrefix(o.FS, path, markFileSize+1)
	if errors.Is(err, fs.ErrNotExist) {
		return syncMark{}, false, nil
	}
	if err != nil {
		return syncMark{}, false, err
	}
	m, err = decodeSyncMark(b, o.DBID, path)
	return m, err == nil, err
}

// markFile is a Log's open sync mark file.
type markFile struct {
	f    vfs.File
	path string
	cur  syncMark // what the file holds
	buf  [markSlotSize]byte
}

// openMarkFile opens the sync mark file of the log in o.Dir, which holds
// cur if found, and makes it record lsn (>= cur.lsn). A missing file is
// created with a temporary file, renamed into place and the directory
// synced, so that a crash leaves either no file or a whole one.
func openMarkFile(o Options, cur syncMark, found bool, lsn LSN) (*markFile, error) {
	m := &markFile{path: o.FS.PathJoin(o.Dir, SyncMarkName), cur: cur}
	if !found {
		if err := createMarkFile(o, m.path, lsn); err != nil {
			return nil, err
		}
		m.cur = syncMark{seq: 1, lsn: lsn}
	}
	f, err := o.FS.OpenReadWrite(m.path, writeCategory)
	if err != nil {
		return nil, fmt.Errorf("wal: open sync mark %s: %w", m.path, err)
	}
	m.f = f
	if err := m.write(lsn); err != nil {
		_ = m.close() // the write error is the one to report
		return nil, err
	}
	return m, nil
}

// createMarkFile writes a new sync mark file recording lsn at path.
func createMarkFile(o Options, path string, lsn LSN) error {
	tmp := path + ".tmp"
	f, err := o.FS.Create(tmp, writeCategory)
	if err != nil {
		return fmt.Errorf("wal: create %s: %w", tmp, err)
	}
	_, err = f.Write(encodeSyncMark(o.DBID, lsn))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wal: write %s: %w", tmp, err)
	}
	if err := o.FS.Rename(tmp, path); err != nil {
		return fmt.Errorf("wal: rename %s to %s: %w", tmp, path, err)
	}
	return vfsutil.SyncDir(o.FS, o.Dir)
}

// write makes the file record lsn durably: it overwrites the older slot
// with the next sequence number and lsn, then fdatasyncs. It does nothing
// if the file records lsn or more already. After an error the file's
// state is unknown and the caller must not write again.
func (m *markFile) write(lsn LSN) error {
	if m == nil || lsn <= m.cur.lsn {
		return nil
	}
	next := syncMark{seq: m.cur.seq + 1, lsn: lsn}
	encodeMarkSlot(m.buf[:], next.seq, next.lsn)
	if _, err := m.f.WriteAt(m.buf[:], markSlotOffset(next.seq)); err != nil {
		return fmt.Errorf("wal: write sync mark %s (LSN %d): %w", m.path, lsn, err)
	}
	if err := m.f.SyncData(); err != nil {
		return fmt.Errorf("wal: sync sync mark %s (LSN %d): %w", m.path, lsn, err)
	}
	m.cur = next
	return nil
}

// close closes the file; a nil m is a no-op.
func (m *markFile) close() error {
	if m == nil || m.f == nil {
		return nil
	}
	err := m.f.Close()
	m.f = nil
	if err != nil {
		return fmt.Errorf("wal: close %s: %w", m.path, err)
	}
	return nil
}
