package wal

import "github.com/heapkv/heapkv/internal/filehdr"

// Sync mark layout, for tests that damage the file.
const (
	MarkOffSlot0 = markOffSlot0
	MarkOffSlot1 = markOffSlot1
	MarkFileSize = markFileSize
	MarkSlotSize = markSlotSize
)

// WithoutSyncMark returns o with the sync mark turned off: Open neither
// creates nor updates the file, as a log of an older version. For the
// benchmark and for showing that the tail damage test fails without it.
func WithoutSyncMark(o Options) Options {
	o.noSyncMark = true
	return o
}

// EncodeSyncMark returns a new sync mark file recording lsn.
func EncodeSyncMark(id filehdr.DBID, lsn LSN) []byte { return encodeSyncMark(id, lsn) }

// EncodeMarkSlot writes a slot holding seq and lsn into dst.
func EncodeMarkSlot(dst []byte, seq uint64, lsn LSN) { encodeMarkSlot(dst, seq, lsn) }

// DecodeSyncMark decodes a sync mark file: the sequence number and LSN of
// its newest valid slot.
func DecodeSyncMark(b []byte, id filehdr.DBID, path string) (seq uint64, lsn LSN, err error) {
	m, err := decodeSyncMark(b, id, path)
	return m.seq, m.lsn, err
}

// WithInlinePrepare returns o with spares prepared inside Append instead of
// on a background goroutine, so that a test's file operations come in a
// fixed order on one goroutine.
func WithInlinePrepare(o Options) Options {
	o.inlinePrepare = true
	return o
}

// WithFixedSalt returns o with every new segment salted with salt (not 0)
// instead of a random value: with it, the frames of a recycled file's
// earlier use carry the salt of its new one, as if frames had no salt.
func WithFixedSalt(o Options, salt uint64) Options {
	o.fixedSalt = salt
	return o
}

// Abandon stops l's spare preparation goroutine, if one runs, without
// flushing or closing anything, as a process crash would. A test that
// "crashes" a Log and recovers on the same file system calls it, so that
// no goroutine of the dead Log touches the directory afterwards.
func Abandon(l *Log) {
	l.closing.Store(true)
	l.prepWG.Wait()
}
