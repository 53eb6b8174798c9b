package heapkv

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math"
	"sync"

	"github.com/heapkv/heapkv/internal/base"
)

// Conflict detection for optimistic transactions.
//
// A transaction reads at the snapshot it took when it began (start LSN s)
// and commits as one group-commit request whose check hook runs in the
// leader, under commit.mu, in commit order, just before the request takes
// its LSN c. The hook asks the conflict tracker whether any commit with an
// LSN in (s, c) wrote
//
//   - a key this transaction writes (write-write: snapshot isolation,
//     first committer wins), or
//   - with TxnOptions.Serializable, a key it read or a key inside a range
//     one of its iterators walked (read-write: the reads would no longer
//     hold at c, so the transaction could not be placed at c in a serial
//     order; ranges catch phantoms).
//
// If none did, the transaction's effects are those of running it alone at
// c, and its own writes are entered in the tracker under c before the next
// request of the same group is checked.
//
// The tracker remembers, for every commit newer than the oldest open
// read-write transaction's start, the keys it wrote: a map from a 64-bit
// key fingerprint to the newest LSN that wrote it (point checks), and the
// commits in LSN order with their keys (range checks and pruning). Two keys
// with the same fingerprint can only make a transaction fail with a
// spurious ErrConflict, never let a real conflict through.
//
// Once the first read-write transaction begins, every commit is tracked,
// plain Put, Delete and Apply included (checkCommit, called by the leader
// for every request): a transaction must conflict with a concurrent plain
// write as well. Before that, plain writes skip the tracker entirely. The
// switch happens under commit.mu, so each commit is either tracked or was
// applied before the switch (and so before any transaction's snapshot).
//
// Pruning: a tracked commit at LSN l is dropped once l <= min(start of every
// open read-write transaction, last applied LSN): every open transaction
// and every later one sees l in its snapshot, so l can no longer conflict.
// To bound memory while a read-write transaction stays open for very long,
// at most maxTrackedKeys keys are kept; dropping older ones raises horizon,
// and a transaction that began before horizon fails with ErrConflict (its
// history is gone, so it cannot be proven conflict-free).

// maxTrackedKeys bounds the keys the tracker remembers (about 100 bytes of
// memory each, plus the keys themselves). A variable for tests.
var maxTrackedKeys = 1 << 20

// conflictTracker is the commit history that transactions check against.
// Lock order (db.go): DB.commit.mu before mu.
type conflictTracker struct {
	seed maphash.Seed

	// mu protects the following.
	mu sync.Mutex
	// enabled is set (under commit.mu and mu) when the first read-write
	// transaction begins; from then on every commit is tracked.
	enabled bool
	// starts counts the open read-write transactions by registered start
	// LSN; minStart caches the smallest key (math.MaxUint64 when empty).
	starts   map[base.LSN]int
	minStart base.LSN
	// last maps a key fingerprint to the newest tracked LSN that wrote it.
	last map[uint64]base.LSN
	// commits are the tracked commits in ascending LSN; head is the first
	// one not yet pruned.
	commits []trackedCommit
	head    int
	nkeys   int // keys in commits[head:]
	// horizon is the newest LSN whose history was dropped for space:
	// transactions that began before it cannot be checked.
	horizon base.LSN
}

// trackedCommit is one commit's write set.
type trackedCommit struct {
	lsn    base.LSN
	hashes []uint64
	keys   [][]byte // copies (slices of one arena), for range checks
}

// keyRange is a range [lo, hi) a serializable transaction read through an
// iterator; hi == nil means no upper limit. Keys are never empty, so an
// empty lo means no lower limit.
type keyRange struct {
	lo, hi []byte
}

func (r *keyRange) contains(k []byte) bool {
	return bytes.Compare(k, r.lo) >= 0 && (r.hi == nil || bytes.Compare(k, r.hi) < 0)
}

func (t *conflictTracker) hash(key []byte) uint64 {
	return maphash.Bytes(t.seed, key)
}

func (t *conflictTracker) initLocked() {
	if t.starts == nil {
		t.seed = maphash.MakeSeed()
		t.starts = make(map[base.LSN]int)
		t.last = make(map[uint64]base.LSN)
		t.minStart = math.MaxUint64
	}
}

// register records an open read-write transaction and returns the start
// LSN it registered: the last applied LSN read under mu, which is at most
// the LSN of any index snapshot the caller takes afterwards, so nothing
// the transaction could conflict with is pruned before it ends.
func (db *DB) registerTxn() base.LSN {
	t := &db.conflicts
	t.mu.Lock()
	if !t.enabled {
		// Switch tracking on under commit.mu (lock order), then drain the
		// pipeline, so that every commit is either tracked or applied
		// before this returns. (A drain that fails has failed the
		// database, and every commit with it.)
		t.mu.Unlock()
		db.commit.mu.Lock()
		t.mu.Lock()
		t.initLocked()
		t.enabled = true
		t.mu.Unlock()
		_ = db.flushPending()
		db.commit.mu.Unlock()
		t.mu.Lock()
	}
	defer t.mu.Unlock()
	s := db.applied.Load()
	t.starts[s]++
	t.minStart = min(t.minStart, s)
	return s
}

// unregisterTxn drops a transaction registered with start s and prunes.
func (db *DB) unregisterTxn(s base.LSN) {
	t := &db.conflicts
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.starts[s]--; t.starts[s] <= 0 {
		delete(t.starts, s)
		if s == t.minStart {
			t.minStart = math.MaxUint64
			for l := range t.starts {
				t.minStart = min(t.minStart, l)
			}
		}
	}
	t.pruneLocked(db.applied.Load())
}

// checkCommit runs in the commit leader for every request before it takes
// lsn: the request's own check hook (transactions), or else, once tracking
// is on, it enters a plain write's keys in the tracker. An error fails the
// request alone.
// REQUIRES: db.commit.mu held.
func (db *DB) checkCommit(r *commitReq, lsn base.LSN) error {
	if r.check != nil {
		return r.check(lsn)
	}
	t := &db.conflicts
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.enabled {
		return nil
	}
	keys := make([][]byte, len(r.ops))
	for i := range r.ops {
		keys[i] = r.ops[i].key
	}
	t.addLocked(lsn, keys)
	t.pruneLocked(db.applied.Load())
	return nil
}

// txnCheck is what a committing transaction asks of the tracker.
type txnCheck struct {
	start  base.LSN   // the transaction's snapshot LSN (lower bound)
	writes [][]byte   // keys written
	reads  []uint64   // fingerprints of keys read (serializable only)
	ranges []keyRange // ranges read (serializable only)
}

// checkTxn returns ErrConflict if a commit after c.start wrote a key
// c writes or (serializable) read; otherwise it enters c's writes at lsn.
// REQUIRES: db.commit.mu held (it is a commitReq.check hook).
func (db *DB) checkTxn(c *txnCheck, lsn base.LSN) error {
	t := &db.conflicts
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.start < t.horizon {
		return fmt.Errorf("%w: more than %d keys were written since the transaction began (LSN %d); its history is gone",
			ErrConflict, maxTrackedKeys, c.start)
	}
	for _, k := range c.writes {
		if l := t.last[t.hash(k)]; l > c.start {
			return fmt.Errorf("%w: key %q written by the commit at LSN %d, after this transaction began (LSN %d)",
				ErrConflict, k, l, c.start)
		}
	}
	for _, h := range c.reads {
		if l := t.last[h]; l > c.start {
			return fmt.Errorf("%w: a key this transaction read was written by the commit at LSN %d, after it began (LSN %d)",
				ErrConflict, l, c.start)
		}
	}
	if len(c.ranges) > 0 {
		for i := len(t.commits) - 1; i >= t.head && t.commits[i].lsn > c.start; i-- {
			tc := &t.commits[i]
			for _, k := range tc.keys {
				for j := range c.ranges {
					if c.ranges[j].contains(k) {
						return fmt.Errorf("%w: key %q in a range this transaction iterated was written by the commit at LSN %d, after it began (LSN %d)",
							ErrConflict, k, tc.lsn, c.start)
					}
				}
			}
		}
	}
	t.addLocked(lsn, c.writes)
	t.pruneLocked(db.applied.Load())
	return nil
}

// addLocked enters a commit's keys (copied) at lsn.
// REQUIRES: t.mu held; lsn above every tracked LSN.
func (t *conflictTracker) addLocked(lsn base.LSN, keys [][]byte) {
	n := 0
	for _, k := range keys {
		n += len(k)
	}
	arena := make([]byte, 0, n)
	tc := trackedCommit{lsn: lsn, hashes: make([]uint64, len(keys)), keys: make([][]byte, len(keys))}
	for i, k := range keys {
		h := t.hash(k)
		tc.hashes[i] = h
		t.last[h] = lsn
		arena = append(arena, k...)
		tc.keys[i] = arena[len(arena)-len(k) : len(arena) : len(arena)]
	}
	t.commits = append(t.commits, tc)
	t.nkeys += len(keys)
}

// pruneLocked drops tracked commits no open or future transaction can
// conflict with (at most applied and at most every registered start), and
// the oldest ones beyond maxTrackedKeys (raising horizon).
// REQUIRES: t.mu held.
func (t *conflictTracker) pruneLocked(applied base.LSN) {
	limit := min(t.minStart, applied)
	for t.head < len(t.commits) {
		tc := &t.commits[t.head]
		if tc.lsn > limit {
			if t.nkeys <= maxTrackedKeys {
				break
			}
			t.horizon = max(t.horizon, tc.lsn)
		}
		for _, h := range tc.hashes {
			if t.last[h] == tc.lsn {
				delete(t.last, h)
			}
		}
		t.nkeys -= len(tc.hashes)
		*tc = trackedCommit{}
		t.head++
	}
	if t.head == len(t.commits) {
		t.commits, t.head = t.commits[:0], 0
	} else if t.head > 1024 && t.head > len(t.commits)/2 {
		n := copy(t.commits, t.commits[t.head:])
		clear(t.commits[n:])
		t.commits, t.head = t.commits[:n], 0
	}
}

// trackedKeys returns how many keys the tracker holds (for Stats).
func (t *conflictTracker) trackedKeys() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nkeys
}

// readHull is the smallest range [lo, hi) covering everything an iterator
// of a serializable transaction looked at; hiInf means no upper limit.
type readHull struct {
	set   bool
	lo    []byte
	hi    []byte
	hiInf bool
}

// extend widens the hull by [lo, hiKey] when incl (the key itself was
// seen), else by [lo, hiBound) where a nil hiBound means no upper limit.
func (h *readHull) extend(lo, hiKey, hiBound []byte, incl bool) {
	if !h.set || bytes.Compare(lo, h.lo) < 0 {
		h.lo = append(h.lo[:0], lo...)
	}
	switch {
	case h.hiInf:
	case incl:
		// hiKey's successor is hiKey + 0x00.
		if !h.set || bytes.Compare(hiKey, h.hi) >= 0 {
			h.hi = append(append(h.hi[:0], hiKey...), 0)
		}
	case hiBound == nil:
		h.hiInf, h.hi = true, nil
	default:
		if !h.set || bytes.Compare(hiBound, h.hi) > 0 {
			h.hi = append(h.hi[:0], hiBound...)
		}
	}
	h.set = true
}

// keyRange returns the hull as a range for the conflict check.
func (h *readHull) keyRange() (keyRange, bool) {
	if !h.set {
		return keyRange{}, false
	}
	r := keyRange{lo: h.lo}
	if !h.hiInf {
		r.hi = h.hi
		if r.hi == nil {
			r.hi = []byte{}
		}
	}
	return r, true
}
