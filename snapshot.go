package heapkv

import (
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Snapshots, and the bookkeeping shared by snapshots, iterators and
// transactions ("readers").
//
// A reader sees the index as of one moment and may read heap values long
// after they were overwritten or deleted. Two things keep that safe:
//
//   - a Pebble snapshot (or a Pebble iterator, which holds an implicit
//     one) fixes the index view;
//   - a pin in db.pins of an LSN p no greater than the view's LSN keeps
//     every heap extent freed by a record after p from being reused until
//     the pin goes (DESIGN invariant 5b; see pins.go). p is read from
//     lastApplied before the view is taken, so every extent the view can
//     reach is freed, if at all, by a record after p.
//
// Readers do not hold db.closeMu: a long-lived snapshot must not block
// Close. Instead every open reader is in db.tx.open, and Close, after it
// has marked the database closed (so no new reader starts), closes each one
// (forceClose). Each reader guards its own state with its own mutex, held
// by every method, so Close waits for a method in progress and later calls
// fail with ErrClosed. Nothing a reader does while holding its mutex waits
// for closeMu, so this cannot deadlock.

// txnState is the DB's state for snapshots, iterators and transactions. Its
// zero value is ready to use.
type txnState struct {
	// mu protects open and closing.
	mu      sync.Mutex
	open    map[*readerEntry]struct{}
	closing bool // set by closeReaders: no reader may start any more

	conflicts conflictTracker

	txnCommits   atomic.Int64
	txnConflicts atomic.Int64
}

type readerKind uint8

const (
	kindSnapshot readerKind = iota
	kindIterator
	kindTxn
)

// readerEntry is one open reader in db.tx.open.
type readerEntry struct {
	kind  readerKind
	lsn   uint64
	since time.Time
	force func() // closes the reader because the DB is closing
}

// addReader registers an open reader, or fails with ErrClosed once Close
// has begun to close the open readers. A reader registers before it takes
// any resource, holding its own mutex, so that force (which takes that
// mutex) finds the resources in place.
func (db *DB) addReader(kind readerKind, lsn uint64, force func()) (*readerEntry, error) {
	e := &readerEntry{kind: kind, lsn: lsn, since: time.Now(), force: force}
	db.tx.mu.Lock()
	defer db.tx.mu.Unlock()
	if db.tx.closing {
		return nil, ErrClosed
	}
	if db.tx.open == nil {
		db.tx.open = make(map[*readerEntry]struct{})
	}
	db.tx.open[e] = struct{}{}
	return e, nil
}

func (db *DB) removeReader(e *readerEntry) {
	db.tx.mu.Lock()
	delete(db.tx.open, e)
	db.tx.mu.Unlock()
}

// closeReaders closes every snapshot, iterator and transaction still open.
// Close calls it after marking the database closed, before it closes any
// file; their later calls return ErrClosed.
func (db *DB) closeReaders() {
	db.tx.mu.Lock()
	db.tx.closing = true
	var es []*readerEntry
	for e := range db.tx.open {
		es = append(es, e)
	}
	db.tx.mu.Unlock()
	// Transactions first: they close their own iterators.
	for _, k := range []readerKind{kindTxn, kindIterator, kindSnapshot} {
		for _, e := range es {
			if e.kind == k {
				e.force()
			}
		}
	}
}

// readerStats fills the reader fields of s.
func (db *DB) readerStats(s *Stats) {
	db.tx.mu.Lock()
	var oldest *readerEntry
	for e := range db.tx.open {
		switch e.kind {
		case kindSnapshot:
			s.OpenSnapshots++
		case kindIterator:
			s.OpenIterators++
		case kindTxn:
			s.OpenTxns++
		}
		if oldest == nil || e.lsn < oldest.lsn || e.lsn == oldest.lsn && e.since.Before(oldest.since) {
			oldest = e
		}
	}
	db.tx.mu.Unlock()
	if oldest != nil {
		s.OldestReaderLSN = oldest.lsn
		s.OldestReaderAge = time.Since(oldest.since)
	}
	s.TxnCommits = db.tx.txnCommits.Load()
	s.TxnConflicts = db.tx.txnConflicts.Load()
	s.TxnTrackedKeys = int64(db.tx.conflicts.trackedKeys())
}

// snapRef is a pinned Pebble snapshot shared by a Snapshot or Txn and the
// iterators made from it; the last reference closes it and drops the pin.
type snapRef struct {
	db    *DB
	psnap *pebble.Snapshot
	lsn   uint64 // pinned; at most the LSN the snapshot sees
	tok   pinToken
	refs  atomic.Int32
}

// newSnapRef pins lsn and takes a Pebble snapshot. lsn must have been read
// from db.lastApplied before the call (see the comment at the top).
// REQUIRES: db.enter held.
func (db *DB) newSnapRef(lsn uint64) *snapRef {
	r := &snapRef{db: db, lsn: lsn, tok: db.pins.pin(lsn)}
	r.psnap = db.index.NewSnapshot()
	r.refs.Store(1)
	return r
}

func (r *snapRef) ref() { r.refs.Add(1) }

func (r *snapRef) unref() {
	if r.refs.Add(-1) == 0 {
		r.psnap.Close() // only errors if already closed
		r.db.pins.unpin(r.tok)
	}
}

// get reads key in the snapshot: a copy of the value, or ErrNotFound.
func (r *snapRef) get(key []byte) ([]byte, error) {
	raw, closer, err := r.psnap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, indexError(fmt.Sprintf("get %q", key), err)
	}
	defer closer.Close()
	return r.db.entryValue(key, raw)
}

// entryValue returns a copy of the value an index entry holds, reading a
// heap value through the value cache (verified against its CRC).
func (db *DB) entryValue(key, raw []byte) ([]byte, error) {
	e, err := decodeEntry(raw, db.geom.BlockSize, db.geom.SegmentBlocks)
	if err != nil {
		return nil, fmt.Errorf("%w: index entry of key %q: %v", ErrCorrupt, key, err)
	}
	if !e.isHeap {
		return append([]byte{}, e.inline...), nil
	}
	return db.heapValue(key, &e.ptr)
}

// Snapshot is a consistent, read-only view of the database as of the moment
// NewSnapshot returned: later writes are not visible through it, and heap
// values it can see are kept (their blocks are not reused) until it is
// closed. Close it when done: an open snapshot holds back the reuse of
// every heap block freed after it was taken (see Stats.OldestReaderAge).
// A Snapshot is safe for concurrent use.
type Snapshot struct {
	db *DB
	// mu protects the following (and serialises with DB.Close).
	mu   sync.Mutex
	ref  *snapRef
	reg  *readerEntry
	done error // nil while open; then ErrSnapshotClosed or ErrClosed
}

// NewSnapshot returns a snapshot of the current state. It fails with
// ErrClosed after Close.
func (db *DB) NewSnapshot() (*Snapshot, error) {
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.leave()
	s := &Snapshot{db: db}
	s.mu.Lock()
	defer s.mu.Unlock()
	lsn := db.lastApplied.Load()
	reg, err := db.addReader(kindSnapshot, lsn, func() { s.close(ErrClosed) })
	if err != nil {
		return nil, err
	}
	s.reg = reg
	s.ref = db.newSnapRef(lsn)
	return s, nil
}

// Get returns a copy of the value key had when the snapshot was taken, or
// an error wrapping ErrNotFound. After Close it returns ErrSnapshotClosed
// (ErrClosed if the database was closed).
func (s *Snapshot) Get(key []byte) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return nil, s.done
	}
	return s.ref.get(key)
}

// NewIter returns an iterator over the snapshot; nil opts means every key.
// The iterator stays usable after the snapshot is closed, until its own
// Close.
func (s *Snapshot) NewIter(opts *IterOptions) (*Iterator, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return nil, s.done
	}
	return s.db.newIter(opts, s.ref, nil)
}

// Scan returns the keys with the given prefix (every key for an empty
// prefix) and their values in the snapshot, in key order; see DB.Scan.
func (s *Snapshot) Scan(prefix []byte, errp *error) iter.Seq2[[]byte, []byte] {
	mustErrp(errp)
	return scanSeq(func() (*Iterator, error) { return s.NewIter(&IterOptions{Prefix: prefix}) }, errp)
}

// Close releases the snapshot. Closing twice returns ErrSnapshotClosed;
// closing after the database was closed (which closes every snapshot)
// returns nil.
func (s *Snapshot) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == ErrClosed {
		s.done = ErrSnapshotClosed
		return nil
	} else if s.done != nil {
		return s.done
	}
	s.closeLocked(ErrSnapshotClosed)
	return nil
}

func (s *Snapshot) close(why error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		s.closeLocked(why)
	}
}

func (s *Snapshot) closeLocked(why error) {
	s.done = why
	s.db.removeReader(s.reg)
	s.ref.unref()
}
