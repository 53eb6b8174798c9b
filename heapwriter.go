package heapkv

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Deferred heap writes of carried values (refinement 52). A durable write's
// record carries its small value (groupCarries), so the value need not be in
// the heap for the write to be durable: only readers need it there, and they
// see a group once it is applied. So the leader allocates the blocks of the
// values its group's records will carry (writeCarried) but does not write
// them; after admitting the group it queues their pieces here (queueCarried),
// and the heap writer, a goroutine the syncer wakes as each flush starts,
// writes everything queued since its last round while the device flushes the
// log: one sorted, coalesced pass per flush instead of one write call per
// group in the leader. A group with queued pieces is applied only once they
// are written (advance), so a reader never finds its blocks unwritten, and
// its writers' buffers, which the pieces point into, stay theirs until
// then.
//
// Measured (BENCHMARKS.md, "Carried values written by the heap writer"):
// the leader's heap write cost 6.2-6.4 µs of a synced 4 KiB Put at 64
// writers, in calls of about three values; one pass per flush writes
// 114-121 KiB a call for about 2.2 µs a value, and the leader, shorter by
// the write, takes the writers that come back sooner. Values above
// smallCarriedValue the leader still writes (markCarried).
//
// Anyone who needs the pieces written sooner writes them (drain): advance,
// for a group whose pieces the heap writer has not reached, and the
// leader before it gives back the blocks of a group it could not append.
//
// A write that fails cannot drop its requests as the leader's did: they
// have taken their LSNs, their records may be durable, and the groups
// built after them took them as done (recentWrites). So the drain writes
// its pieces once more; if that works, the groups are applied, since
// the values are in the heap and the records say what the writes did,
// but their writers get the first error (ErrHeapWrite: the write took
// effect, yet one of its I/O calls failed, and a write that met an I/O
// error is never reported as plain success). If the second attempt fails
// too, the database fails; recovery writes carried values from the log
// again. On a failed database a drain drops what is queued, writing
// nothing more. In the disk-full state nothing is deferred: the leader
// writes, so that an ENOSPC fails only its group's requests
// (writeCarried), as before.

// heapWriter is the queue of carried values waiting for their heap write
// (DB.heapw).
type heapWriter struct {
	// writeMu lets one drain run at a time; it is held across the heap
	// writes, and guards scratch.
	writeMu sync.Mutex
	scratch leaderScratch

	// mu guards queue, queued and failures; it is held for no I/O.
	mu    sync.Mutex
	queue []carriedPiece // pieces not yet taken by a drain
	// queued is the ticket of the newest group queued: groups take
	// tickets 1, 2, 3... as they are queued (in LSN order, under
	// commit.mu). Not their LSNs: a group the leader gives up before it
	// is appended leaves its LSNs to the next group.
	queued uint64
	// failures are the drains whose first write failed and whose second
	// worked, oldest first, until advance has applied their groups.
	failures []heapWriteFailure

	// written is the ticket through which every queued group's pieces
	// are in the heap (or were dropped after a failure).
	written atomic.Uint64
	kick    chan struct{} // wakes heapWriterLoop; capacity 1
}

// heapWriteFailure is a drain whose first write failed: the groups with
// tickets in (after, through] report err.
type heapWriteFailure struct {
	after, through uint64
	err            error
}

// queueCarried queues the pieces of the values g's records carry and whose
// blocks the leader allocated without writing them (preparedOp.deferred),
// and gives g the ticket it waits for. REQUIRES: db.commit.mu held (groups
// are queued in LSN order), after admit.
func (db *DB) queueCarried(g *group) {
	if !slices.ContainsFunc(g.reqs, hasDeferred) {
		return // a NoSync group, or one sent heap first
	}
	hw := &db.heapw
	hw.mu.Lock()
	n := len(hw.queue)
	for _, r := range g.reqs {
		for i := range r.ops {
			if p := &r.ops[i]; p.deferred {
				hw.queue = appendPieces(hw.queue, p, db.geom.BlockSize)
			}
		}
	}
	if len(hw.queue) > n {
		hw.queued++
		g.heapTicket = hw.queued
	}
	hw.mu.Unlock()
}

// hasDeferred reports whether the heap writer writes one of r's values.
func hasDeferred(r *commitReq) bool {
	for i := range r.ops {
		if r.ops[i].deferred {
			return true
		}
	}
	return false
}

// kickHeapWriter wakes the heap writer if pieces wait.
func (db *DB) kickHeapWriter() {
	hw := &db.heapw
	if hw.written.Load() >= db.heapQueued() {
		return
	}
	select {
	case hw.kick <- struct{}{}:
	default:
	}
}

// heapQueued returns the ticket of the newest group queued.
func (db *DB) heapQueued() uint64 {
	hw := &db.heapw
	hw.mu.Lock()
	defer hw.mu.Unlock()
	return hw.queued
}

// heapWritten reports whether the pieces g queued are in the heap.
func (db *DB) heapWritten(g *group) bool {
	return db.heapw.written.Load() >= g.heapTicket
}

// drainCarried writes every piece queued so far and returns once they are
// in the heap (page cache), or dropped because the database has failed. If
// the write fails it writes them once more, and records the first error
// for their groups' writers (heapWriteErr); if that fails too, the
// database fails.
func (db *DB) drainCarried() {
	hw := &db.heapw
	hw.writeMu.Lock()
	defer hw.writeMu.Unlock()
	hw.mu.Lock()
	sc := &hw.scratch
	sc.pieces, hw.queue = hw.queue, sc.pieces[:0]
	through := hw.queued
	hw.mu.Unlock()
	if len(sc.pieces) > 0 && db.failed() == nil {
		if err := db.writePieces(sc, false); err != nil {
			err = fmt.Errorf("%w: %w", ErrHeapWrite, err)
			if err2 := db.writePieces(sc, false); err2 != nil {
				db.fail(err2)
			} else {
				hw.mu.Lock()
				hw.failures = append(hw.failures, heapWriteFailure{after: hw.written.Load(), through: through, err: err})
				hw.mu.Unlock()
			}
		}
	}
	clear(sc.pieces) // drop the references to the writers' values
	sc.pieces = sc.pieces[:0]
	hw.written.Store(through)
}

// heapWriteErr returns the error g's writers get although g is applied:
// the first write of its values failed (see above). It forgets the
// failures of groups before g. REQUIRES: g's pieces are written
// (heapWritten); groups are asked in LSN order (advance).
func (db *DB) heapWriteErr(g *group) error {
	if g.heapTicket == 0 {
		return nil
	}
	hw := &db.heapw
	hw.mu.Lock()
	defer hw.mu.Unlock()
	for len(hw.failures) > 0 && hw.failures[0].through < g.heapTicket {
		hw.failures = hw.failures[1:]
	}
	if len(hw.failures) > 0 && hw.failures[0].after < g.heapTicket {
		return hw.failures[0].err
	}
	return nil
}

// heapWriterLoop drains the queue whenever the syncer starts a flush (or
// anything else kicks it), until Close. What it leaves, advance drains.
func (db *DB) heapWriterLoop() {
	defer db.bg.wg.Done()
	for {
		select {
		case <-db.bg.stop:
			return
		case <-db.heapw.kick:
			db.drainCarried()
		}
	}
}
