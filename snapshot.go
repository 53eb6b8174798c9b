package heapkv

import (
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/internal/base"
)

// Snapshots. A Snapshot is a registered reader (readers.go) holding a
// pinned Pebble snapshot (snapRef), which the iterators made from it share.

// snapRef is a pinned Pebble snapshot shared by a Snapshot or Txn and the
// iterators made from it; the last reference closes it and drops the pin.
type snapRef struct {
	db    *DB
	psnap *pebble.Snapshot
	lsn   base.LSN // pinned; at most the LSN the snapshot sees
	tok   pinToken
	refs  atomic.Int32
}

// newSnapRef pins lsn and takes a Pebble snapshot. lsn must have been read
// from db.applied before the call (see the comment at the top).
// REQUIRES: db.enter held.
func (db *DB) newSnapRef(lsn base.LSN) *snapRef {
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
	lsn := db.applied.Load()
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
