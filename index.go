package heapkv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
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
	cache := pebble.NewCache(indexCacheCapacity(&db.opts))
	defer cache.Unref()
	if !create {
		ro, err := db.openPebble(dir, db.indexOptions(cache, false, true))
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
	popts := db.indexOptions(cache, create, false)
	idx, err := db.openPebble(dir, popts)
	if err != nil {
		if !create {
			return indexOpenError(err)
		}
		return fmt.Errorf("heapkv: create index: %w", err)
	}
	db.index, db.indexOpts = idx, popts
	return nil
}

// indexMemTablesCharged is how many memtables' sizes the index's cache is
// made larger by: Pebble reserves every memtable's size from its block
// cache (pebble v2.1.7 DB.newMemTable: Cache.Reserve), the mutable one, one
// being flushed and one kept for recycling, so a cache of IndexCacheSize
// alone held almost no blocks (issue 14 measured a hit rate of 1.8% after
// a 1 KB load and YCSB A; TestIndexCacheHoldsBlocksBesideMemTables).
const indexMemTablesCharged = 3

// indexCacheCapacity is the capacity of the index's cache: IndexCacheSize
// for blocks plus the memtables Pebble charges to it.
func indexCacheCapacity(o *Options) int64 {
	return o.IndexCacheSize + indexMemTablesCharged*o.IndexMemTableSize
}

func (db *DB) indexOptions(cache *pebble.Cache, create, readOnly bool) *pebble.Options {
	popts := &pebble.Options{
		FS:                          dirSyncFS{&fencedFS{FS: db.fs, fence: &db.indexFence, fail: db.failIndex}},
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
// log durable through every record applied so far. It takes only durable.mu,
// which is never held across an index call, so it cannot deadlock.
func (db *DB) beforeIndexFlush() {
	if err := db.syncApplied(); err != nil {
		// The table may now hold entries whose log records are not durable.
		// Fail the write path so nothing more is acknowledged; reopening
		// recovers from what is durable.
		db.logger.Error("sync before index flush failed", "err", err)
		db.fail(err)
	}
}

// pebbleLogger sends Pebble's log lines to slog. Pebble calls Fatalf for
// its broken invariants but also for data corruption and for failed
// MANIFEST writes (which the fence now swallows before Pebble sees them:
// indexfence.go), on its own goroutines, where a panic cannot be
// recovered: Fatalf fails the database and fences the index instead
// (failure.go), and Pebble goes on to return the error it has.
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
//
// It also bounds the wait: Pebble's Open waits for the flush of what its
// (empty) WAL files replay, and retries a failed flush forever. When the
// database fails first (a fatal index error fenced the index), the open is
// abandoned: its goroutines park for good (see indexEventListener), holding
// nothing but memory, and this Open returns the failure. A later Open in
// the same process is not locked out, because the index's own LOCK is not
// taken (fencedFS.Lock): the database directory's LOCK already excludes
// every other handle.
func (db *DB) openPebble(dir string, opts *pebble.Options) (*pebble.DB, error) {
	type result struct {
		idx *pebble.DB
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("index open failed: %v", r)}
			}
		}()
		idx, err := pebble.Open(dir, opts)
		done <- result{idx, err}
	}()
	select {
	case r := <-done:
		return r.idx, r.err
	case <-db.failure.done():
		db.indexAbandoned.Store(true)
		go func() {
			if r := <-done; r.idx != nil {
				_ = r.idx.Close()
			}
		}()
		return nil, db.failed()
	}
}

// The checkpoint marker.
//
// Pebble reads a damaged edit at the end of its MANIFEST as a torn tail
// and opens without the tables that edit added, so an index can come back
// older than the checkpoint that flushed it, with nothing said. Each
// checkpoint therefore adds a marker to the index once its flush is done,
// and Open compares it with the MANIFEST (checkIndexMarker). Pebble logs
// its edits in order, so an index that holds the marker holds every table
// the flush before it made.
//
// The marker is a Pebble range key over [indexMarkerStart, indexMarkerEnd)
// with an empty suffix: point reads and point iterators never see range
// keys, so it takes no room in the user's key space. It is ingested as a
// table of its own rather than written to the memtable: a flushed table
// that held both the marker and user keys would span from \x00 to its last
// key and overlap, for compactions, nearly every table below it (a
// sequential load's tables could no longer be moved down without a
// rewrite). Its value:
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

func encodeIndexMarker(lsn base.LSN, c counters) []byte {
	b := make([]byte, 1, indexMarkerSize)
	b[0] = indexMarkerVersion
	for _, v := range []uint64{uint64(lsn), uint64(c.keys), uint64(c.inlineBytes), uint64(c.heapRawBytes), uint64(c.heapStoredBytes)} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

func decodeIndexMarker(b []byte) (lsn base.LSN, c counters, err error) {
	if len(b) != indexMarkerSize || b[0] != indexMarkerVersion {
		return 0, c, fmt.Errorf("checkpoint marker of %d bytes, version %d", len(b), b[0])
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[1+8*i:]) }
	c = counters{keys: int64(u(1)), inlineBytes: int64(u(2)), heapRawBytes: int64(u(3)), heapStoredBytes: int64(u(4))}
	return base.LSN(u(0)), c, nil
}

// writeIndexMarker records in the index that it holds every write through
// the checkpoint at lsn, whose counters are c. The caller has flushed.
func (db *DB) writeIndexMarker(lsn base.LSN, c counters) (err error) {
	path := db.fs.PathJoin(db.dir, indexMarkerFileName)
	defer func() {
		if rerr := db.fs.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = rerr
		}
		if err != nil {
			err = fmt.Errorf("write checkpoint marker into index: %w", err)
		}
	}()
	f, err := db.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), db.indexOpts.MakeWriterOptions(0, db.index.TableFormat()))
	if err := w.RangeKeySet(indexMarkerStart, indexMarkerEnd, nil, encodeIndexMarker(lsn, c)); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := db.index.Ingest(context.Background(), []string{path}); err != nil {
		return err
	}
	// An ingest whose MANIFEST edit was swallowed behind the fence
	// (indexfence.go) returns nil, but the index on disk lacks the marker.
	return db.failed()
}

// readIndexMarker returns the marker idx holds; ok is false if it has none.
func readIndexMarker(idx *pebble.DB) (lsn base.LSN, c counters, ok bool, err error) {
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
