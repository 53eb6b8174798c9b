package heapkv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"

	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/internal/keyfilter"
)

// The key filter saved by Close (refinement 43).
//
// Building the filter at the first write after Open reads every key of the
// index: about 1.7 s of CPU for 2.4 million keys on the 2-core machine of
// BENCHMARKS.md, taken from the writes and reads of the first seconds.
// Close, once its checkpoint at LSN c is written, saves the filter as
// keys-<c> if it is complete (the scan finished, or the filter was itself
// loaded). Open uses only keys-<c> for the checkpoint c it opens at. A
// recovery that replays any record writes a checkpoint of its own first,
// so a filter saved before a crash names an older checkpoint than the one
// Open ends at: at keys-<c>, the index holds exactly the keys it held when
// the file was written, and the filter holds each of them. Every other
// Open scans as before, and every checkpoint deletes the file
// (removeObsolete), as it describes the index no longer. A file that fails its checks is ignored
// with a warning: the filter is an accelerator, never a source of truth.
// One saved by an older release in the filter's first encoding is
// ignored too (keyfilter.ErrOldVersion), with an Info line, not a warning.
//
// Layout of keys-<c>:
//
//	+--------------------+----------------------------------+--------------+
//	| filehdr (32 B)     | the filter (keyfilter's          | CRC-32C of   |
//	| kind "KF", DB ID   | AppendBinary encoding)           | the filter,  |
//	|                    |                                  | 4 B, LE      |
//	+--------------------+----------------------------------+--------------+
//
// Keys are never removed from a filter, so one carried over many Opens
// keeps the deleted keys of all of them as "maybe" (a lookup each, as
// before the filter). Close saves it only while it holds at most twice the
// keys the database holds (plus 64Ki); beyond that the next Open scans and
// starts clean.

// savePresence writes keys-<lsn> if the filter is complete and not too far
// ahead of the database's keys. Its failure costs the next Open a scan,
// nothing more, so it is logged, not returned.
func (db *DB) savePresence(lsn base.LSN, keys int64) {
	p := &db.presence
	if !p.ready.Load() || p.filter.Keys() > 2*keys+1<<16 {
		return
	}
	data := make([]byte, filehdr.Size, filehdr.Size+p.filter.Bytes()+64)
	filehdr.Header{Kind: filehdr.KindKeys, Version: filehdr.Version, DBID: db.id}.Encode(data)
	data, err := p.filter.AppendBinary(data)
	if err == nil {
		data = binary.LittleEndian.AppendUint32(data, crc32.Checksum(data[filehdr.Size:], crcTable))
		err = writeFileAtomic(db.fs, db.dir, keysFileName(lsn), data)
	}
	if err != nil {
		db.logger.Warn("saving the key filter failed; the next Open rebuilds it", "err", err)
	}
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// loadPresence returns the filter Close saved for the checkpoint Open
// ends at, or nil if there is none or it cannot be used (see above).
// REQUIRES: recovery done (with its checkpoint, if it replayed records),
// no write committed since.
func (db *DB) loadPresence() *keyfilter.Filter {
	if db.opts.ReadOnly {
		return nil // writes alone use the filter
	}
	c := db.ckpt.lsn.Load()
	path := db.fs.PathJoin(db.dir, keysFileName(c))
	data, err := readFile(db.fs, path, maxStateFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var f *keyfilter.Filter
	if err == nil {
		f, err = decodePresence(data, db.id)
	}
	switch {
	case errors.Is(err, keyfilter.ErrOldVersion):
		db.logger.Info("the saved key filter has an older format; rebuilding it", "file", path)
		return nil
	case err != nil:
		db.logger.Warn("ignoring the saved key filter; rebuilding it", "file", path, "err", err)
		return nil
	}
	return f
}

// decodePresence checks and decodes a keys-<c> file.
func decodePresence(data []byte, id filehdr.DBID) (*keyfilter.Filter, error) {
	if _, err := filehdr.Check(data, filehdr.KindKeys, id); err != nil {
		return nil, err
	}
	body := data[filehdr.Size:]
	if len(body) < 4 {
		return nil, fmt.Errorf("%w: key filter file of %d bytes", base.ErrCorrupt, len(data))
	}
	filter, sum := body[:len(body)-4], binary.LittleEndian.Uint32(body[len(body)-4:])
	if crc32.Checksum(filter, crcTable) != sum {
		return nil, fmt.Errorf("%w: key filter checksum mismatch", base.ErrCorrupt)
	}
	return keyfilter.Decode(filter)
}
