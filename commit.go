package heapkv

import (
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
)

// Group commit. A writer prepares its request outside any shared lock
// (write.go), then queues it. One leader at a time takes everything queued
// and, holding commit.mu, runs the group through four steps:
//
//  1. build: work out what each key held before each op (priorState), so
//     the record names the extents the write frees; assign LSNs; encode
//     the records and the index batch;
//  2. log: append the group's records with one write and, if any write in
//     the group wants durability, sync the log; every log fsync first
//     fsyncs the heap (wal.Options.BeforeSync), so the heap is durable
//     before the log that points at it (invariant 1), including the fsync
//     a log rotation does on its own;
//  3. apply: commit the index batch and advance the applied LSN;
//  4. finish: publish the new extents, queue the freed ones for deferred
//     reuse (pins.go), count.
//
// Followers sleep until the leader finishes their group; leadership then
// passes to the first request that queued meanwhile.

// commitReq is one write waiting for group commit.
type commitReq struct {
	ops  []preparedOp
	sync bool
	// check, if set, runs in the leader under commit.mu, in queue order,
	// before the group's records are built, with the LSN the request will
	// take if it passes; an error fails this request alone and it takes no
	// LSN (transactions use it to detect conflicts against every commit
	// before it, including earlier ones of the group). See checkCommit.
	check func(lsn base.LSN) error
	err   error
	wake  chan bool // receives true to lead, false when committed
}

// preparedOp is a batch op with its heap value already written.
type preparedOp struct {
	kind   byte
	key    []byte
	inline []byte // for an inline put
	isHeap bool
	ptr    pointer // for a heap put; lsn is filled in by the leader
	claim  alloc.Claim

	// prior is what the key held as of LSN priorAt, looked up by the
	// writer before it queued (prefetchPrior), so that the leader need not
	// read the index under commit.mu unless the key changed since.
	prior      keyState
	priorAt    base.LSN
	prefetched bool
}

// committer is the group-commit queue.
type committer struct {
	// mu guards queue and leading.
	mu      sync.Mutex
	queue   []*commitReq
	leading bool
}

// commitRequest queues req and returns once its group has committed (or
// failed).
func (db *DB) commitRequest(req *commitReq) error {
	req.wake = make(chan bool, 1)
	c := &db.queue
	c.mu.Lock()
	c.queue = append(c.queue, req)
	if c.leading {
		c.mu.Unlock()
		if lead := <-req.wake; !lead {
			return req.err
		}
		c.mu.Lock()
	} else {
		c.leading = true
	}
	reqs := c.queue
	c.queue = nil
	c.mu.Unlock()

	db.commitGroup(reqs)

	c.mu.Lock()
	if len(c.queue) > 0 {
		c.queue[0].wake <- true
	} else {
		c.leading = false
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if r != req {
			r.wake <- false
		}
	}
	return req.err
}

// group is one commit group on its way through the leader's steps.
type group struct {
	reqs     []*commitReq     // the requests that passed their checks, in LSN order
	first    base.LSN         // LSN of reqs[0]; reqs[i] takes first+i
	records  [][]byte         // the log record of each request
	freed    [][]alloc.Extent // the extents each record frees
	batch    *pebble.Batch    // the index writes of the whole group
	delta    counters         // what the group changes in the counters
	sync     bool             // some request wants durability
	logBytes int64            // bytes of records
	heapSize int64            // heap bytes the records point at
}

func (g *group) last() base.LSN { return g.first + base.LSN(len(g.reqs)) - 1 }

// fail sets err as the outcome of every request of g.
func (g *group) fail(err error) {
	for _, r := range g.reqs {
		r.err = err
	}
}

// commitGroup runs the leader's steps for reqs; it sets every req.err.
func (db *DB) commitGroup(reqs []*commitReq) {
	db.commit.mu.Lock()
	defer db.commit.mu.Unlock()
	g := db.admit(reqs)
	if len(g.reqs) == 0 {
		return
	}
	abort := func(err error) {
		for _, r := range g.reqs {
			db.abortClaims(r.ops)
		}
		g.fail(err)
	}
	if err := db.failed(); err != nil {
		abort(err)
		return
	}
	g.batch = db.index.NewBatch()
	defer g.batch.Close()
	if err := db.buildGroup(g); err != nil {
		abort(err)
		return
	}
	if err := db.logGroup(g); err != nil {
		// The records may or may not be on disk: stop writing, keep the
		// claims allocated (recovery decides from the log), report.
		g.fail(db.fail(err))
		return
	}
	if err := g.batch.Commit(pebble.NoSync); err != nil {
		g.fail(db.fail(fmt.Errorf("apply to index: %w", err)))
		return
	}
	db.applied.Store(g.last())
	db.finishGroup(g)
}

// admit runs each request's check with the LSN it would take; requests
// whose check fails drop out before they take one.
// REQUIRES: db.commit.mu held.
func (db *DB) admit(reqs []*commitReq) *group {
	g := &group{first: db.log.Load().NextLSN(), reqs: make([]*commitReq, 0, len(reqs))}
	for _, r := range reqs {
		if err := db.checkCommit(r, g.first+base.LSN(len(g.reqs))); err != nil {
			r.err = err
			db.abortClaims(r.ops)
			continue
		}
		g.reqs = append(g.reqs, r)
	}
	return g
}

// buildGroup is step 1: for every op, what its key held before it, the
// record op and the index write.
// REQUIRES: db.commit.mu held.
func (db *DB) buildGroup(g *group) error {
	seen := make(map[string]keyState) // what earlier ops of the group left
	g.records = make([][]byte, len(g.reqs))
	g.freed = make([][]alloc.Extent, len(g.reqs))
	var entryBuf []byte
	for i, r := range g.reqs {
		lsn := g.first + base.LSN(i)
		g.sync = g.sync || r.sync
		ops := make([]logOp, len(r.ops))
		for j := range r.ops {
			p := &r.ops[j]
			prior, err := db.priorState(seen, p)
			if err != nil {
				return err
			}
			op := &ops[j]
			op.kind, op.key = p.kind, p.key
			op.oldKind, op.oldRaw, op.oldStored, op.freed = prior.kind, prior.raw, prior.stored, prior.extents
			g.freed[i] = append(g.freed[i], prior.extents...)
			g.delta.remove(prior)
			var now keyState
			switch {
			case p.kind == opDelete:
				now = keyState{kind: keyAbsent}
				if err := g.batch.Delete(p.key, nil); err != nil {
					return fmt.Errorf("heapkv: index batch: %w", err)
				}
			case p.isHeap:
				p.ptr.lsn = lsn
				entryBuf = appendHeapEntry(entryBuf[:0], &p.ptr)
				now = keyState{kind: keyHeap, raw: p.ptr.rawLen, stored: p.ptr.storedLen, extents: p.ptr.extents}
				g.heapSize += int64(p.ptr.storedLen)
			default:
				entryBuf = appendInlineEntry(entryBuf[:0], p.inline)
				now = keyState{kind: keyInline, raw: uint64(len(p.inline))}
			}
			if p.kind == opPut {
				op.entry = append([]byte(nil), entryBuf...)
				if err := g.batch.Set(p.key, op.entry, nil); err != nil {
					return fmt.Errorf("heapkv: index batch: %w", err)
				}
			}
			g.delta.add(now)
			seen[string(p.key)] = now
		}
		g.records[i] = appendRecord(nil, ops)
		g.logBytes += int64(len(g.records[i]))
	}
	return nil
}

// logGroup is step 2: append the records and, if the group or the amount
// of unsynced data asks for it, sync heap then log.
// REQUIRES: db.commit.mu held.
func (db *DB) logGroup(g *group) error {
	log := db.log.Load()
	db.durable.mu.Lock()
	defer db.durable.mu.Unlock()
	// A NoSync database syncs once NoSyncFlushBytes of log and heap writes
	// are unsynced, which bounds what a crash can take and how long freed
	// space waits.
	flush := g.sync || db.durable.unsynced+g.logBytes+g.heapSize >= db.opts.NoSyncFlushBytes
	if _, err := log.Append(g.records); err != nil {
		return fmt.Errorf("heapkv: append to log: %w", err)
	}
	db.durable.unsynced += g.logBytes + g.heapSize
	if flush {
		if err := log.Sync(); err != nil { // heap first: BeforeSync
			return fmt.Errorf("heapkv: sync heap and log: %w", err)
		}
		db.durable.unsynced = 0
	}
	return nil
}

// finishGroup is step 4, after the group is in the index: remember the
// keys written, count, ask for a checkpoint when the log has grown, publish
// the new extents and queue the freed ones.
// REQUIRES: db.commit.mu held.
func (db *DB) finishGroup(g *group) {
	db.noteWrites(g)
	db.commit.counters = db.commit.counters.plus(g.delta)
	db.commit.sinceCkpt += g.logBytes
	// On a full disk, checkpoints come sooner: each gives log space back.
	if (db.opts.CheckpointLogBytes > 0 && db.commit.sinceCkpt >= db.opts.CheckpointLogBytes) ||
		(db.reserve.diskFull.Load() && db.commit.sinceCkpt >= db.opts.DiskReserve/8) {
		select {
		case db.bg.kick <- struct{}{}:
		default:
		}
	}
	for i, r := range g.reqs {
		for j := range r.ops {
			if r.ops[j].isHeap {
				db.alloc.Publish(r.ops[j].claim)
			}
		}
		db.commit.frees.push(g.first+base.LSN(i), g.freed[i], db.geom.BlockSize)
		db.vcache.drop(g.freed[i])
	}
	db.releaseFreesLocked()
	db.stats.commits.Add(int64(len(g.reqs)))
	db.stats.groups.Add(1)
}

// minRecentLimit is the size at which recentWrites is first pruned.
const minRecentLimit = 4096

// priorState returns what p's key holds before p: from earlier ops of the
// group being committed, else from the writer's prefetch if no commit
// since wrote the key, else from the index.
// REQUIRES: db.commit.mu held.
func (db *DB) priorState(seen map[string]keyState, p *preparedOp) (keyState, error) {
	if v, ok := seen[string(p.key)]; ok {
		return v, nil
	}
	if p.prefetched {
		if at, ok := db.commit.recentWrites[string(p.key)]; !ok || at <= p.priorAt {
			return p.prior, nil
		}
	}
	return db.indexState(p.key)
}

// noteWrites records the LSN of the last write of each key of a committed
// group, for priorState's prefetch check, and forgets what no queued
// writer can need: entries at or below the smallest LSN a writer
// prefetched at.
// REQUIRES: db.commit.mu held.
func (db *DB) noteWrites(g *group) {
	recent := db.commit.recentWrites
	for i, r := range g.reqs {
		for j := range r.ops {
			recent[string(r.ops[j].key)] = g.first + base.LSN(i)
		}
	}
	if len(recent) < db.commit.recentLimit {
		return
	}
	bound := db.applied.Load()
	if m, n := db.writePins.min(); n > 0 {
		bound = min(bound, m)
	}
	for k, lsn := range recent {
		if lsn <= bound {
			delete(recent, k)
		}
	}
	db.commit.recentLimit = max(minRecentLimit, 2*len(recent))
}
