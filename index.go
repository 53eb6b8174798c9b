package heapkv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// indexBloomBitsPerKey sizes the index tables' Bloom filters: 10 bits per
// key give about a 1% false-positive rate.
const indexBloomBitsPerKey = 10

// openIndex opens the Pebble index in the index/ subdirectory. Pebble's own
// WAL is off: our log is the redo record, and the flush hook keeps the index
// from ever running ahead of it (invariant 2).
//
// An existing index is first opened read-only and checked against the
// checkpoint (checkIndexMarker): a Pebble MANIFEST that lost its newest
// edits opens without complaint, and a read-write open would then delete
// the tables those edits named as obsolete. Only an index that passes is
// opened for writing.
func (db *DB) openIndex(create bool, m *manifest) error {
	dir := db.fs.PathJoin(db.dir, indexDirName)
	cache := pebble.NewCache(db.opts.IndexCacheSize)
	defer cache.Unref()
	if !create {
		ro, err := openPebble(dir, db.indexOptions(cache, false, true))
		if err != nil {
			return indexOpenError(err)
		}
		err = db.checkIndexMarker(ro, m)
		if cerr := ro.Close(); err == nil && cerr != nil {
			err = indexOpenError(cerr)
		}
		if err != nil {
			return err
		}
	}
	idx, err := openPebble(dir, db.indexOptions(cache, create, false))
	if err != nil {
		if !create {
			return indexOpenError(err)
		}
		return fmt.Errorf("heapkv: create index: %w", err)
	}
	db.index = idx
	return nil
}

func (db *DB) indexOptions(cache *pebble.Cache, create, readOnly bool) *pebble.Options {
	popts := &pebble.Options{
		FS:                          dirSyncFS{fencedFS{FS: db.fs, fence: &db.indexFence}},
		Cache:                       cache,
		MemTableSize:                uint64(db.opts.IndexMemTableSize),
		DisableWAL:                  true,
		ErrorIfNotExists:            !create,
		ErrorIfExists:               create,
		ReadOnly:                    readOnly,
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      pebbleLogger{l: db.logger.With("component", "index"), db: db},
		MemTableStopWritesThreshold: 4,
		EventListener:               db.indexEventListener(),
	}
	// Every write looks up the key's old entry (to free its extents and
	// keep exact counters), and most lookups during a load are for keys that
	// do not exist yet: a Bloom filter per table lets such a Get skip a table
	// without reading its index and data blocks. L1+ inherit L0's policy.
	popts.Levels[0].FilterPolicy = bloom.FilterPolicy(indexBloomBitsPerKey)
	popts.EnsureDefaults()
	return popts
}

// indexOpenError classifies a failure to open an existing index: a full
// disk or an I/O error is reported as such, anything else is damage.
func indexOpenError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w: open index: %w", ErrDiskFull, err)
	case errors.Is(err, syscall.EIO), errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS),
		errors.Is(err, ErrFailed):
		return fmt.Errorf("heapkv: open index: %w", err)
	case errors.Is(err, ErrCorrupt):
		return err
	}
	return fmt.Errorf("%w: index: %w", ErrCorrupt, err)
}

// beforeIndexFlush runs on Pebble's flush goroutine, with Pebble's mutex
// held, before a memtable is written to a table: it makes the heap and the
// log durable through every record applied so far. It takes only appendMu,
// which is never held across an index call, so it cannot deadlock.
func (db *DB) beforeIndexFlush() {
	if err := db.syncDurable(); err != nil {
		// The table may now hold entries whose log records are not durable.
		// Fail the write path so nothing more is acknowledged; reopening
		// recovers from what is durable.
		db.logger.Error("sync before index flush failed", "err", err)
		db.fail(err)
	}
}

// pebbleLogger sends Pebble's log lines to slog. Pebble calls Fatalf for
// its broken invariants but also for data corruption and for failed
// MANIFEST writes, syncs and flushes, on its own goroutines, where a panic
// cannot be recovered: Fatalf fails the database and fences the index
// instead (failure.go), and Pebble goes on to return the error it has.
type pebbleLogger struct {
	l  *slog.Logger
	db *DB
}

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error("fatal index error", "msg", msg)
	// Keep the cause (an ENOSPC, an EIO, a corruption) for errors.Is.
	for _, a := range args {
		if err, ok := a.(error); ok {
			p.db.failIndex(fmt.Errorf("%s: %w", msg, err))
			return
		}
	}
	p.db.failIndex(errors.New(msg))
}

// openPebble opens Pebble, turning a panic into an error: Pebble panics on
// some I/O failures during Open (a failed directory fsync while ratcheting
// its format), and a failed Open must come back to our caller as an error.
// Nothing of the half-opened index is used afterwards.
func openPebble(dir string, opts *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("index open failed: %v", r)
		}
	}()
	return pebble.Open(dir, opts)
}

// The checkpoint marker.
//
// Pebble reads a damaged edit at the end of its MANIFEST as a torn tail
// and opens without the tables that edit added, so an index can come back
// older than the checkpoint that flushed it, with nothing said. Each
// checkpoint therefore writes a marker into the index just before its
// flush, and Open compares it with the MANIFEST (checkIndexMarker).
//
// The marker is a Pebble range key over [indexMarkerStart, indexMarkerEnd)
// with an empty suffix: point reads and point iterators never see range
// keys, so it takes no room in the user's key space. Its value:
//
//	+---------+---------------+------+-------------+--------------+-----------------+
//	| version | checkpointLSN | keys | inlineBytes | heapRawBytes | heapStoredBytes |
//	| u8 = 1  | u64           | u64  | u64         | u64          | u64             |
//	+---------+---------------+------+-------------+--------------+-----------------+
//
// little endian; the counters are those of the checkpoint (Pebble's block
// checksums cover the bytes).
var (
	indexMarkerStart = []byte{0}
	indexMarkerEnd   = []byte{0, 0}
)

const (
	indexMarkerVersion = 1
	indexMarkerSize    = 1 + 8*5
)

func encodeIndexMarker(lsn uint64, c counters) []byte {
	b := make([]byte, 1, indexMarkerSize)
	b[0] = indexMarkerVersion
	for _, v := range []uint64{lsn, uint64(c.keys), uint64(c.inlineBytes), uint64(c.heapRawBytes), uint64(c.heapStoredBytes)} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

func decodeIndexMarker(b []byte) (lsn uint64, c counters, err error) {
	if len(b) != indexMarkerSize || b[0] != indexMarkerVersion {
		return 0, c, fmt.Errorf("checkpoint marker of %d bytes, version %d", len(b), b[0])
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[1+8*i:]) }
	c = counters{keys: int64(u(1)), inlineBytes: int64(u(2)), heapRawBytes: int64(u(3)), heapStoredBytes: int64(u(4))}
	return u(0), c, nil
}

// writeIndexMarker records in the index that it holds every write through
// the checkpoint at lsn, whose counters are c. The caller flushes.
func (db *DB) writeIndexMarker(lsn uint64, c counters) error {
	if err := db.index.RangeKeySet(indexMarkerStart, indexMarkerEnd, nil, encodeIndexMarker(lsn, c), pebble.NoSync); err != nil {
		return fmt.Errorf("heapkv: write checkpoint marker into index: %w", err)
	}
	return nil
}

// readIndexMarker returns the marker idx holds; ok is false if it has none.
func readIndexMarker(idx *pebble.DB) (lsn uint64, c counters, ok bool, err error) {
	it, err := idx.NewIter(&pebble.IterOptions{
		KeyTypes: pebble.IterKeyTypeRangesOnly, LowerBound: indexMarkerStart, UpperBound: indexMarkerEnd,
	})
	if err != nil {
		return 0, c, false, indexError("read checkpoint marker", err)
	}
	defer it.Close()
	if it.First() {
		for _, rk := range it.RangeKeys() {
			if len(rk.Suffix) == 0 {
				lsn, c, err = decodeIndexMarker(rk.Value)
				if err != nil {
					return 0, c, false, fmt.Errorf("%w: index: %w", ErrCorrupt, err)
				}
				return lsn, c, true, nil
			}
		}
	}
	if err := it.Error(); err != nil {
		return 0, c, false, indexError("read checkpoint marker", err)
	}
	return 0, c, false, nil
}

// checkIndexMarker compares the marker of idx with the MANIFEST m. The
// index may be ahead of m (a crash between the index flush and the
// MANIFEST install: replay from m is idempotent over it), never behind.
func (db *DB) checkIndexMarker(idx *pebble.DB, m *manifest) error {
	lsn, c, ok, err := readIndexMarker(idx)
	if err != nil {
		return err
	}
	dir := db.fs.PathJoin(db.dir, indexDirName)
	switch {
	case ok && lsn < m.checkpointLSN:
		return fmt.Errorf("%w: index %s holds the checkpoint at LSN %d but the MANIFEST's is at LSN %d: the index lost the tables of later flushes (damaged index MANIFEST?)",
			ErrCorrupt, dir, lsn, m.checkpointLSN)
	case ok && lsn == m.checkpointLSN && c != m.counters:
		return fmt.Errorf("%w: index %s holds %+v at checkpoint LSN %d, the MANIFEST %+v", ErrCorrupt, dir, c, lsn, m.counters)
	case ok:
		return nil
	}
	// No marker: an index written before markers existed, or one that lost
	// every table. Tell them apart by whether it holds any key.
	it, err := idx.NewIter(nil)
	if err != nil {
		return indexError("check for keys", err)
	}
	empty := !it.First()
	err = it.Error()
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return indexError("check for keys", err)
	}
	if empty && m.counters.keys > 0 {
		return fmt.Errorf("%w: index %s is empty but the checkpoint at LSN %d counts %d keys (damaged index MANIFEST?)",
			ErrCorrupt, dir, m.checkpointLSN, m.counters.keys)
	}
	if !empty {
		db.logger.Info("index has no checkpoint marker (written by an older heapkv); the next checkpoint adds it")
	}
	return nil
}
