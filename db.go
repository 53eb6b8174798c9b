package heapkv

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/mirror"
	"github.com/heapkv/heapkv/wal"
)

// DB is an open heapkv database. All methods are safe for concurrent use.
type DB struct {
	opts   Options
	dir    string
	fs     vfs.FS
	logger *slog.Logger
	id     filehdr.DBID
	geom   alloc.Geometry
	lock   *dirLock

	index     *pebble.DB
	indexOpts *pebble.Options // what index was opened with (index.go)
	heap      *mirror.Set
	alloc     *alloc.Allocator
	log       atomic.Pointer[wal.Log] // nil until recovery has replayed the log

	// closeMu is held shared by every operation in flight and exclusively
	// by Close, so Close waits for them and nothing touches closed files.
	closeMu sync.RWMutex
	closed  bool // guarded by closeMu

	committer committer

	// commitMu serialises commit groups (held by the leader for a whole
	// group), the capture step of a checkpoint, Check's capture, and the
	// release of deferred frees. It guards the fields below.
	commitMu   sync.Mutex
	counters   counters
	frees      freeQueue
	sinceCkpt  int64  // log bytes appended since the last checkpoint
	appliedLSN uint64 // last LSN applied to the index; mirrored in lastApplied

	// appendMu is held while appending to the log and while syncing heap
	// then log, so that a sync never makes durable a record whose heap
	// writes it did not also sync (invariant 1). It never wraps an index
	// call, so the index's flush hook may take it. It guards unsynced.
	appendMu sync.Mutex
	unsynced int64 // log and heap bytes appended since the last sync

	failure    failLatch   // the first failure; writes refuse after it (failure.go)
	indexFence atomic.Bool // set by the first index failure: index/ is read-only
	// indexAbandoned is set when an index open hung and was given up.
	indexAbandoned atomic.Bool
	rawFS          vfs.FS      // fs without the disk-full hook, for the reserve (reserve.go)
	diskFull       atomic.Bool // the reserve is in use: values are refused
	reserveMu      sync.Mutex  // serialises making and releasing the reserve
	// recentWrites maps keys written by recent commits to the LSN of the
	// last one, so the leader can trust a writer's prefetched old value
	// (see oldValue). Guarded by commitMu.
	recentWrites map[string]uint64
	recentLimit  int     // prune recentWrites when it reaches this size
	writePins    *pinSet // LSNs writers prefetched at

	lastApplied atomic.Uint64
	pins        *pinSet

	// ckptMu serialises checkpoints.
	ckptMu  sync.Mutex
	ckptLSN atomic.Uint64

	repl replicaState // MANIFEST installs, heap replicas (replicas.go)

	tx txnState // open snapshots, iterators, transactions; conflict tracker

	blockPool sync.Pool // *[]byte of one block, for padding tails
	stats     opStats
	ckptKick  chan struct{}
	stop      chan struct{}
	bg        sync.WaitGroup

	encoder    *encoder    // Options.Compression; nil for none (codec.go)
	codecStats codecStats  // heap values written, before/after compression
	vcache     *valueCache // nil when disabled (cache.go)
}

// opStats are monotonically increasing counters read by Stats.
type opStats struct {
	commits     atomic.Int64
	groups      atomic.Int64
	checkpoints atomic.Int64
	gets        atomic.Int64
}

// Open opens the database in dir, creating it if dir does not exist or is
// empty. Only dir itself is created: a missing parent directory is an error
// wrapping fs.ErrNotExist. A nil opts means defaults. Open recovers from the
// write-ahead log after a crash. It fails with ErrLocked only if another
// handle, in this process or another, holds dir; any other failure to use
// dir (no permission, a read-only file system, not a directory) wraps the
// operating system's error. It fails with an error wrapping ErrCorrupt,
// naming the file, when a file is missing, foreign or damaged; it never
// deletes or overwrites anything on that path, and a directory it refuses
// keeps no LOCK file (nor, if it was made by this call, the directory).
func Open(dir string, opts *Options) (_ *DB, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: empty directory name", ErrInvalidOptions)
	}
	fs := o.fs
	madeDir, err := mkdirLeaf(fs, dir)
	if err != nil {
		return nil, err
	}
	if madeDir {
		defer func() {
			if err != nil {
				_ = fs.Remove(dir) // fails, as it should, unless still empty
			}
		}()
	}
	lock, err := lockDir(fs, dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			lock.keep() // opened; a refused Open's closeFiles removed a LOCK file lockDir made
		}
	}()
	db := &DB{
		opts:         o,
		dir:          dir,
		fs:           fs,
		logger:       o.Logger.With("db", dir),
		lock:         lock,
		pins:         newPinSet(),
		writePins:    newPinSet(),
		recentWrites: make(map[string]uint64),
		recentLimit:  4096,
		ckptKick:     make(chan struct{}, 1),
		stop:         make(chan struct{}),
	}
	db.blockPool.New = func() any { b := make([]byte, db.geom.BlockSize); return &b }
	// Every file goes through the disk-full hook: the first ENOSPC frees
	// the space reserve and the write is retried (reserve.go).
	db.rawFS, db.fs = fs, vfs.OnDiskFull(fs, db.onDiskFull)
	if db.encoder, err = newEncoder(o.Compression, o.CompressionLevel); err != nil {
		db.closeFiles()
		return nil, err
	}
	if err := db.recover(); err != nil {
		db.closeFiles()
		return nil, err
	}
	// The value cache starts empty after recovery, so nothing recovery read
	// (possibly of records it then cut off) can be served from it.
	if o.ValueCacheSize > 0 {
		if db.vcache, err = newValueCache(o.ValueCacheSize, max(o.InlineThreshold, 0)+1); err != nil {
			db.closeFiles()
			return nil, err
		}
	}
	db.openReserve()
	db.bg.Add(1)
	go db.background()
	return db, nil
}

// Close makes every write durable, writes a checkpoint so the next Open is
// fast, and releases the directory. Operations after Close return ErrClosed.
// Close closes every snapshot, iterator and transaction still open (a
// transaction's buffered writes are discarded); their methods then return
// ErrClosed.
func (db *DB) Close() error {
	db.closeMu.Lock()
	if db.closed {
		db.closeMu.Unlock()
		return ErrClosed
	}
	db.closed = true
	db.closeMu.Unlock()
	db.closeReaders() // snapshots, iterators, transactions still open

	close(db.stop)
	db.bg.Wait()
	// A failed database writes no checkpoint (the next Open recovers from
	// what is durable) and says why it failed.
	err := db.failed()
	if err == nil {
		err = db.checkpoint()
	}
	if cerr := db.closeFiles(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("heapkv: close %s: %w", db.dir, err)
	}
	return nil
}

// closeFiles closes whatever is open, keeping the first error.
func (db *DB) closeFiles() error {
	var errs []error
	db.vcache.close()
	if l := db.log.Swap(nil); l != nil {
		errs = append(errs, l.Close())
	}
	if db.index != nil {
		errs = append(errs, db.index.Close())
		db.index = nil
	}
	if db.heap != nil {
		errs = append(errs, db.heap.Close())
		db.heap = nil
	}
	if db.lock != nil {
		errs = append(errs, db.lock.release())
		db.lock = nil
	}
	return errors.Join(errs...)
}

// enter marks the start of an operation; the caller must call db.leave.
func (db *DB) enter() error {
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (db *DB) leave() { db.closeMu.RUnlock() }

func checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > MaxKeySize:
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrKeyTooLarge, len(key), MaxKeySize)
	}
	return nil
}

// Get returns a copy of the value stored under key, or an error wrapping
// ErrNotFound if there is none.
func (db *DB) Get(key []byte) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.leave()
	db.stats.gets.Add(1)
	tok := db.pins.pin(db.lastApplied.Load())
	defer db.pins.unpin(tok)

	raw, closer, err := db.index.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, indexError(fmt.Sprintf("get %q", key), err)
	}
	e, err := decodeEntry(raw, db.geom.BlockSize, db.geom.SegmentBlocks)
	if err != nil {
		closer.Close()
		return nil, fmt.Errorf("%w: index entry of key %q: %v", ErrCorrupt, key, err)
	}
	if !e.isHeap {
		v := append([]byte(nil), e.inline...)
		closer.Close()
		return v, nil
	}
	closer.Close() // e.ptr holds no reference into raw
	return db.heapValue(key, &e.ptr)
}

// Put stores value under key with the database's default durability.
func (db *DB) Put(key, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrValueTooLarge, len(value), MaxValueSize)
	}
	// Apply finishes with the caller's slices before it returns, so a
	// single write needs no copy.
	return db.apply([]batchOp{{kind: opPut, key: key, value: value}}, nil)
}

// Delete removes key. Deleting a missing key is not an error.
func (db *DB) Delete(key []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return db.apply([]batchOp{{kind: opDelete, key: key}}, nil)
}
