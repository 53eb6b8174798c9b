package heapkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/mirror"
	"github.com/heapkv/heapkv/wal"
)

// Lock order. A goroutine holding one of these locks takes only locks
// further down the list:
//
//  1. DB.compactMu: one Compact at a time (compact.go); the Compact that
//     holds it then works through transactions of its own;
//  2. a reader's own mu (Snapshot.mu, Iterator.mu, Txn.mu): held by each
//     of its methods, which may then enter the database (closing.mu);
//  3. DB.closing.mu: held shared by every operation in flight (enter,
//     leave), exclusively by Close only to set closed;
//  4. DB.attaching.mu: the running AttachReplica calls;
//  5. DB.ckpt.mu: one checkpoint at a time;
//  6. DB.commit.mu: the commit leader while it builds and appends a group,
//     a checkpoint while it drains the pipeline, the first transaction's
//     switch to conflict tracking;
//  7. conflictTracker.mu (DB.conflicts);
//  8. DB.durable.mu: one flush of heap and log at a time (syncThrough).
//     Pebble's flush hook takes it with Pebble's own mutex held, so no
//     index call is made while holding it;
//  9. DB.applier.mu: applying a group to the index, and one consistent
//     moment of index, counters and allocation (checkpoint, Check, Scrub,
//     Stats); then DB.heapw.writeMu: one writer of deferred carried values
//     at a time (heapwriter.go), taken by advance under applier.mu and by
//     the leader under commit.mu;
// 10. the allocator's locks (alloc: a cursor's mu, then the pool mu),
//     under which alloc.Allocator.ShrinkTail has Compact truncate the
//     heap's files (the heap's state lock, shared);
// 11. the log's locks (wal.Log), then the heap's (mirror.Set: its sync and
//     acknowledgement locks), whose state-change callback takes
// 12. DB.manifest.mu, under which the heap's state lock is read-locked
//     (mirror.Set.Status);
// 13. locks that are only ever taken last, holding nothing else: the
//     group-commit queue (DB.queue.mu), the pipeline (DB.pipe.mu), the
//     heap writer's queue (DB.heapw.mu), the
//     reader registry (DB.readers.mu), the pin shards, and DB.reserve.mu
//     (the disk-full hook may run inside any write of the database, and
//     then does I/O only on the raw file system).

// DB is an open heapkv database. All methods are safe for concurrent use.
type DB struct {
	// Set by Open and not changed after it returns.
	opts      Options
	dir       string
	fs        vfs.FS // every file, through the disk-full hook (reserve.go)
	rawFS     vfs.FS // fs without the hook, for the reserve itself
	logger    *slog.Logger
	id        filehdr.DBID
	geom      alloc.Geometry
	lock      *dirLock
	index     *pebble.DB
	indexOpts *pebble.Options // what index was opened with (index.go)
	heap      *mirror.Set
	alloc     *alloc.Allocator
	encoder   *encoder                // Options.Compression; nil for none (codec.go)
	vcache    *valueCache             // nil when disabled (cache.go)
	ecache    *entryCache             // nil when disabled (entrycache.go)
	blockPool sync.Pool               // *[]byte of one block, for padding tails
	log       atomic.Pointer[wal.Log] // nil until recovery has replayed the log

	// applied is the LSN of the last record applied to the index. Only the
	// holder of applier.mu (or recovery) stores it; anyone may load it.
	applied base.AtomicLSN

	// closing makes Close wait for the operations in flight: each holds
	// mu shared (enter, leave), so nothing touches a closed file.
	closing struct {
		mu     sync.RWMutex
		closed bool
	}

	queue  committer     // group-commit queue (commit.go)
	leader leaderScratch // the leader's buffers for carried values (carried.go); only the leader uses them

	// commit is the state of the commit leader (commit.go): mu is held by
	// the leader while it builds and appends a group (never across a
	// device flush) and by a checkpoint while it drains the pipeline.
	commit struct {
		mu sync.Mutex
		// recentWrites maps each key written by a recent group to its last
		// write, so the leader knows what a key holds before the index
		// does (priorState); pruned at recentLimit entries.
		recentWrites map[string]recentWrite
		recentLimit  int
		// records is the buffer the leader encodes a group's log records
		// into, reused from group to group (Append copies them).
		records []byte
		// logOps, entries and ends are buildGroup's other scratch space,
		// reused from group to group: the ops of the record being
		// encoded, the index entries of the group's puts (the batch and
		// the records copy them), and where each record ends in records.
		logOps     []logOp
		entries    []byte
		ends       []int
		recordList [][]byte // a group's records, until appendGroup appends them
	}

	pipe pipeline // groups appended and not yet applied (pipeline.go)

	// applier is the state that applying a group changes (pipeline.go):
	// mu is held while a group is applied, and by whoever needs one
	// consistent moment of the index, counters and allocation (a
	// checkpoint's capture, Check, Scrub, Stats).
	applier struct {
		mu        sync.Mutex
		counters  counters  // exact logical totals (stats.go)
		frees     freeQueue // freed extents not yet reusable (pins.go)
		sinceCkpt int64     // log bytes appended since the last checkpoint
		// sinceCkptCarried is the part of sinceCkpt that is values the
		// records carry (checkpointDueLocked).
		sinceCkptCarried int64
	}

	durable durableState // flushes of heap and log (durable.go)
	heapw   heapWriter   // carried values waiting for their heap write (heapwriter.go)

	// ckpt serialises checkpoints (checkpoint.go); lsn is the newest
	// checkpoint's LSN, stored under mu and loaded anywhere.
	ckpt struct {
		mu  sync.Mutex
		lsn base.AtomicLSN
	}

	manifest manifestState // the installed MANIFEST (manifest.go)

	// compactMu lets one Compact run at a time (compact.go).
	compactMu sync.Mutex

	// attaching holds the running AttachReplica calls (replicas.go).
	attaching struct {
		mu  sync.Mutex
		ops map[int]*attachOp
	}

	readers   readerRegistry  // open snapshots, iterators, transactions (readers.go)
	conflicts conflictTracker // commit history for transactions (conflict.go)
	pins      *pinSet         // LSNs readers see the index as of (pins.go)
	writePins *pinSet         // LSNs writers prefetched prior values at (write.go)
	counters  counterLocks    // Increment's per-key-stripe locks (counter.go)
	presence  presence        // which keys the index may hold (presence.go)

	failure        failLatch   // the first failure; writes refuse after it (failure.go)
	indexFence     atomic.Bool // set by the first index failure: index/ is read-only
	indexAbandoned atomic.Bool // an index open hung and was given up (index.go)

	// reserve is the space reserve's state (reserve.go); mu serialises
	// making and releasing it.
	reserve struct {
		mu       sync.Mutex
		diskFull atomic.Bool // the reserve is released: values may be refused
	}

	stats opStats // counters for Stats (stats.go)

	// bg runs the background loop (durable.go) and every other goroutine
	// that Close must wait for; stop is closed by Close, and a send on kick
	// asks for a checkpoint.
	bg struct {
		wg   sync.WaitGroup
		stop chan struct{}
		kick chan struct{}
	}
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
	if o.ReadOnly {
		return openReadOnly(fs, dir, o)
	}
	madeDir, err := mkdirLeaf(fs, dir, dirMode(o.FileMode))
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
	lock, err := lockDir(fs, dir, o.FileMode)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			lock.keep() // opened; a refused Open's closeFiles removed a LOCK file lockDir made
		}
	}()
	db := newDB(fs, dir, o, lock)
	if err := refuseUnfinishedIncrement(fs, dir, &o); err != nil {
		db.closeFiles()
		return nil, err
	}
	if db.encoder, err = newEncoder(o.Compression, o.CompressionLevel); err != nil {
		db.closeFiles()
		return nil, err
	}
	if err := db.recover(); err != nil {
		db.closeFiles()
		return nil, err
	}
	if err := db.startCaches(); err != nil {
		db.closeFiles()
		return nil, err
	}
	db.openReserve()
	db.startPresence()
	db.bg.wg.Add(5)
	go db.syncer()
	go db.applyLoop()
	go db.logWriter()
	go db.heapWriterLoop()
	go db.background()
	return db, nil
}

// newDB returns a database handle on dir, holding lock, with nothing open.
func newDB(fs vfs.FS, dir string, o Options, lock *dirLock) *DB {
	db := &DB{
		opts:      o,
		dir:       dir,
		logger:    o.Logger.With("db", dir),
		lock:      lock,
		pins:      newPinSet(),
		writePins: newPinSet(),
	}
	db.commit.recentWrites = make(map[string]recentWrite)
	db.commit.recentLimit = minRecentLimit
	db.bg.kick = make(chan struct{}, 1)
	db.pipe.kick = make(chan struct{}, 1)
	db.pipe.applyKick = make(chan struct{}, 1)
	db.pipe.writeKick = make(chan struct{}, 1)
	db.heapw.kick = make(chan struct{}, 1)
	db.bg.stop = make(chan struct{})
	db.blockPool.New = func() any { b := make([]byte, db.geom.BlockSize); return &b }
	// Every file goes through the disk-full hook: the first ENOSPC frees
	// the space reserve and the write is retried (reserve.go).
	db.rawFS, db.fs = fs, vfs.OnDiskFull(withFileMode(fs, o.FileMode), db.onDiskFull)
	return db
}

// startCaches makes the value and entry caches. They start empty after
// recovery, so nothing recovery read (possibly of records it then cut
// off) can be served from them.
func (db *DB) startCaches() error {
	if db.opts.ValueCacheSize > 0 {
		vc, err := newValueCache(db.opts.ValueCacheSize, max(db.opts.InlineThreshold, 0)+1)
		if err != nil {
			return err
		}
		db.vcache = vc
	}
	db.ecache = newEntryCache(db.opts.EntryCacheSize)
	return nil
}

// Close makes every write durable, writes a checkpoint so the next Open is
// fast, and releases the directory. Operations after Close return ErrClosed.
// Close closes every snapshot, iterator and transaction still open (a
// transaction's buffered writes are discarded); their methods then return
// ErrClosed.
func (db *DB) Close() error {
	db.closing.mu.Lock()
	if db.closing.closed {
		db.closing.mu.Unlock()
		return ErrClosed
	}
	db.closing.closed = true
	db.closing.mu.Unlock()
	db.closeReaders() // snapshots, iterators, transactions still open

	close(db.bg.stop)
	db.bg.wg.Wait()
	// A failed database writes no checkpoint (the next Open recovers from
	// what is durable) and says why it failed.
	err := db.failed()
	if err == nil && !db.opts.ReadOnly {
		err = db.checkpoint(false)
		if err == nil {
			db.releaseSpares()
			db.applier.mu.Lock()
			keys := db.applier.counters.keys
			db.applier.mu.Unlock()
			db.savePresence(db.ckpt.lsn.Load(), keys)
		}
	}
	if cerr := db.closeFiles(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("heapkv: close %s: %w", db.dir, err)
	}
	return nil
}

// releaseSpares deletes the log's spare segments as Close ends: a closed
// database keeps no disk for files it may never use (with the defaults up
// to three spares of 16 MiB, 5% of a 1 GB database). The next Open needs
// none (it recycles the segment it replaces), and the first rotation after
// it finds none ready and zero-fills one in the background, as the log
// does whenever its pool runs dry. Failing to delete them loses nothing:
// it is logged, and Open adopts what it finds. (A preparation that the
// checkpoint's rotation started and that ends before the log closes adds
// one spare back; the log's Close stops one still running.)
func (db *DB) releaseSpares() {
	if freed, err := db.log.Load().ReleaseSpares(); err != nil {
		db.logger.Warn("deleting spare log segments at close", "freed", freed, "err", err)
	}
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
	db.closing.mu.RLock()
	if db.closing.closed {
		db.closing.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (db *DB) leave() { db.closing.mu.RUnlock() }

// untilClose returns a context derived from ctx that Close also cancels,
// for long operations (AttachReplica, Scrub) that Close must not wait out.
func (db *DB) untilClose(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-db.bg.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// untilFailed returns ctx, ended also when the database fails: a wait on
// Pebble (a manual compaction queued behind one that a fenced index
// retries forever) would otherwise never end (refinement 10).
func (db *DB) untilFailed(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-db.failure.done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// stopping reports whether Close has begun.
func (db *DB) stopping() bool {
	select {
	case <-db.bg.stop:
		return true
	default:
		return false
	}
}
