package heapkv

import (
	"sync"
	"time"

	"github.com/heapkv/heapkv/internal/base"
)

// The registry of readers: every open snapshot, iterator and transaction.
//
// A reader sees the index as of one moment and may read heap values long
// after they were overwritten or deleted. Two things keep that safe:
//
//   - a Pebble snapshot (or a Pebble iterator, which holds an implicit
//     one) fixes the index view;
//   - a pin in db.pins of an LSN p no greater than the view's LSN keeps
//     every heap extent freed by a record after p from being reused until
//     the pin goes (DESIGN invariant 5b; see pins.go). p is read from
//     db.applied before the view is taken, so every extent the view can
//     reach is freed, if at all, by a record after p.
//
// Readers do not hold db.closing.mu: a long-lived snapshot must not block
// Close. Instead every open reader is in db.readers.open, and Close, after it
// has marked the database closed (so no new reader starts), closes each one
// (readerEntry.force). Each reader guards its own state with its own
// mutex, held by every method, so Close waits for a method in progress and
// later calls fail with ErrClosed. A method may enter the database (take
// closing.mu shared) while it holds its reader's mutex, but Close holds
// closing.mu only while it marks the database closed, never while it takes
// a reader's mutex, so this cannot deadlock.

// readerRegistry holds every open reader. Its zero value is ready to use.
type readerRegistry struct {
	// mu protects open and closing.
	mu      sync.Mutex
	open    map[*readerEntry]struct{}
	closing bool // set by closeReaders: no reader may start any more
}

type readerKind uint8

const (
	kindSnapshot readerKind = iota
	kindIterator
	kindTxn
)

// readerEntry is one open reader in db.readers.open.
type readerEntry struct {
	kind  readerKind
	lsn   base.LSN
	since time.Time
	force func() // closes the reader because the DB is closing
}

// addReader registers an open reader, or fails with ErrClosed once Close
// has begun to close the open readers. A reader registers before it takes
// any resource, holding its own mutex, so that force (which takes that
// mutex) finds the resources in place.
func (db *DB) addReader(kind readerKind, lsn base.LSN, force func()) (*readerEntry, error) {
	e := &readerEntry{kind: kind, lsn: lsn, since: time.Now(), force: force}
	db.readers.mu.Lock()
	defer db.readers.mu.Unlock()
	if db.readers.closing {
		return nil, ErrClosed
	}
	if db.readers.open == nil {
		db.readers.open = make(map[*readerEntry]struct{})
	}
	db.readers.open[e] = struct{}{}
	return e, nil
}

func (db *DB) removeReader(e *readerEntry) {
	db.readers.mu.Lock()
	delete(db.readers.open, e)
	db.readers.mu.Unlock()
}

// closeReaders closes every snapshot, iterator and transaction still open.
// Close calls it after marking the database closed, before it closes any
// file; their later calls return ErrClosed.
func (db *DB) closeReaders() {
	db.readers.mu.Lock()
	db.readers.closing = true
	var es []*readerEntry
	for e := range db.readers.open {
		es = append(es, e)
	}
	db.readers.mu.Unlock()
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
	db.readers.mu.Lock()
	var oldest *readerEntry
	for e := range db.readers.open {
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
	db.readers.mu.Unlock()
	if oldest != nil {
		s.OldestReaderLSN = uint64(oldest.lsn)
		s.OldestReaderAge = time.Since(oldest.since)
	}
	s.TxnCommits = db.stats.txnCommits.Load()
	s.TxnConflicts = db.stats.txnConflicts.Load()
	s.TxnTrackedKeys = int64(db.conflicts.trackedKeys())
}
