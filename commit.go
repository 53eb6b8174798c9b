package heapkv

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/wal"
)

// Group commit. A writer prepares its request outside any shared lock
// (write.go), then queues it. One leader at a time takes everything queued,
// allocates and writes the heap values the requests carry (carried.go),
// and, holding commit.mu (never across a device flush):
//
//  1. admit: runs each request's conflict check, which may drop it;
//  2. build: works out what each key held before each op (priorState), so
//     the record names the extents the write frees; assigns LSNs; encodes
//     the records, carrying the values of a durable group in them, and the
//     index batch;
//  3. append: frames the group's records into the log's buffer, which the
//     syncer's flush writes for a durable group and the log writer soon
//     after for a NoSync one; and hands the group to the pipeline
//     (pipeline.go).
//
// A group that need not be durable is then applied at once (advance). If
// requests queued meanwhile, the same leader takes them as the next group,
// up to maxLeadRounds groups, and then leadership passes to the first
// request still queued; so the next group is built and appended while the
// pipeline's syncer flushes this one. The pipeline applies groups to the
// index in LSN order once each is durable (or needs no flush) and wakes
// their writers.

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
	wake  chan bool // receives true to lead, false when its group is done

	// one holds the op of a single write (Put, Delete), so that it takes
	// no allocation of its own.
	one [1]preparedOp
}

// commitReqs recycles the requests of writes: a request, its channel and
// its op are three allocations a write need not make (on the VMs of
// BENCHMARKS.md the Go heap's fresh pages fault in at about 20 µs each;
// refinement 36).
var commitReqs = sync.Pool{New: func() any { return &commitReq{wake: make(chan bool, 1)} }}

// newCommitReq returns an empty request for n ops.
func newCommitReq(n int, sync bool, check func(lsn base.LSN) error) *commitReq {
	r := commitReqs.Get().(*commitReq)
	if n <= len(r.one) {
		r.ops = r.one[:n]
	} else {
		r.ops = make([]preparedOp, n)
	}
	r.sync, r.check = sync, check
	return r
}

// release gives r back for reuse once its writer is done with it: before
// it was queued, or once commitRequest returned, when no goroutine refers
// to r (its group woke it last) and its channel is empty (every wake-up
// was received). A writer that panics does not release its request.
func (r *commitReq) release() {
	*r = commitReq{wake: r.wake}
	commitReqs.Put(r)
}

// preparedOp is a batch op with its heap value already written.
type preparedOp struct {
	kind   byte
	key    []byte
	inline []byte // for an inline put
	isHeap bool
	ptr    pointer // for a heap put; lsn is filled in by the leader
	claim  alloc.Claim
	// carry, if not nil, is the stored bytes of a heap value small enough
	// for the leader to write (DB.leaderWrites): the writer neither
	// allocated nor wrote them; the leader allocates their blocks and
	// writes them before the request takes an LSN (writeCarried), unless
	// deferred. A durable write's log record may also carry them
	// (groupCarries). carried: the record carries them (markCarried);
	// deferred: the heap writer writes them once the group is appended
	// (heapwriter.go).
	carry    []byte
	carried  bool
	deferred bool
	// fresh: the value's blocks come from empty segments, after those of
	// the op before (alloc.AllocateFresh; Compact's clustering).
	fresh bool

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

// recentWrite is the last write of a key by a recent group: its LSN and
// what it left the key holding.
type recentWrite struct {
	lsn   base.LSN
	state keyState
}

// commitRequest queues req and returns once its group is done: applied (and
// durable if req.sync), or failed; and, if req's writer led, once it
// stopped leading.
func (db *DB) commitRequest(req *commitReq) error {
	if req.wake == nil {
		req.wake = make(chan bool, 1)
	}
	c := &db.queue
	c.mu.Lock()
	c.queue = append(c.queue, req)
	if c.leading {
		c.mu.Unlock()
		if lead := db.await(req); !lead {
			return req.err
		}
		c.mu.Lock()
	} else {
		c.leading = true
	}
	var g *group // the last group led, if it waits for a flush
	for round := 1; ; round++ {
		reqs := c.queue
		c.queue = nil
		c.mu.Unlock()

		g = db.commitGroup(db.writeCarried(reqs))
		if g != nil && !g.flush {
			// Nothing to wait for: apply it now, so that its writers
			// wake before the next group is built.
			db.advance()
			g = nil
		}

		c.mu.Lock()
		if len(c.queue) == 0 {
			c.leading = false
			break
		}
		if round == maxLeadRounds {
			c.queue[0].wake <- true
			break
		}
	}
	c.mu.Unlock()
	if g != nil {
		db.advance() // the flush may be done already
	}
	db.await(req) // false: a request leads at most once
	return req.err
}

// maxLeadRounds is how many groups in a row one leader builds while
// requests keep queuing, before it hands leadership to the first queued
// request and returns to its own writer. Handing over after every group
// cost a goroutine wake-up per group, and the new leader then waited for
// a processor behind the writers the old one had just woken (Go runs the
// goroutine readied last first); leading on saves both. It bounds how
// long a leader's own write waits past its group. Measured on 1 KB NoSync
// writes (BENCHMARKS.md, "A leader leads while requests queue"): 4, 8, 16
// and 64 rounds were level, and all faster than one.
const maxLeadRounds = 8

// await waits for req's wake-up: true to lead, false once its group is
// done. Once Close has begun the syncer may be gone (only the background
// loop's vouch record commits then), so a group that waits for a flush is
// flushed here.
func (db *DB) await(req *commitReq) bool {
	select {
	case lead := <-req.wake:
		return lead
	case <-db.bg.stop:
		_ = db.flushPending() // a failure fails the group, which wakes req
		return <-req.wake
	}
}

// group is one commit group on its way through the leader and the pipeline.
type group struct {
	reqs     []*commitReq     // the requests that passed their checks, in LSN order
	first    base.LSN         // LSN of reqs[0]; reqs[i] takes first+i
	records  [][]byte         // the log record of each request, until appended (the leader's scratch)
	freed    [][]alloc.Extent // the extents each record frees; nil if none frees any
	batch    *pebble.Batch    // the index writes of the whole group
	delta    counters         // what the group changes in the counters
	logBytes int64            // bytes of records
	carried  int64            // bytes of the values the records carry (of logBytes)
	heapSize int64            // heap bytes the records point at
	// flush: the group is done only once durable (a request wants
	// durability, or twice NoSyncFlushBytes of unsynced writes built up:
	// appendGroup).
	flush bool
	// uncarried: some record points at heap bytes it does not carry, which
	// must be durable before the record is (invariant 1).
	uncarried bool
	// heapTicket: the heap writer writes some of the group's values, in
	// the drain that reaches this ticket; the group is applied only once
	// they are written (heapWritten). 0: none.
	heapTicket uint64
}

func (g *group) last() base.LSN { return g.first + base.LSN(len(g.reqs)) - 1 }

// finish sets err as the outcome of every request of g and wakes them.
func (g *group) finish(err error) {
	if g.batch != nil {
		g.batch.Close()
		g.batch = nil
	}
	for _, r := range g.reqs {
		r.err = err
		r.wake <- false
	}
}

// commitGroup runs the leader's steps for reqs and returns the group it
// handed to the pipeline, or nil if none (every request failed or was
// dropped: each is woken with its error).
func (db *DB) commitGroup(reqs []*commitReq) *group {
	db.commit.mu.Lock()
	defer db.commit.mu.Unlock()
	g := db.admit(reqs)
	if len(g.reqs) == 0 {
		return nil
	}
	abort := func(err error) *group {
		// The heap writer may hold pieces of these values: the blocks go
		// back only once it is done with them.
		db.drainCarried()
		for _, r := range g.reqs {
			db.abortClaims(r.ops)
		}
		g.finish(err)
		return nil
	}
	if err := db.failed(); err != nil {
		return abort(err)
	}
	db.queueCarried(g)
	g.batch = db.index.NewBatch()
	if err := db.buildGroup(g); err != nil {
		return abort(err)
	}
	if err := db.appendGroup(g); err != nil {
		// The records may or may not be on disk: stop writing, keep the
		// claims allocated (recovery decides from the log), report, once
		// the heap writer is done with the writers' values.
		err = db.fail(err)
		db.drainCarried()
		g.finish(err)
		return nil
	}
	return g
}

// admit runs each request's check with the LSN it would take; requests
// whose check fails drop out (woken with the error) before they take one.
// REQUIRES: db.commit.mu held.
func (db *DB) admit(reqs []*commitReq) *group {
	g := &group{first: db.log.Load().NextLSN(), reqs: reqs[:0]} // reqs is the leader's own
	for _, r := range reqs {
		if err := db.checkCommit(r, g.first+base.LSN(len(g.reqs))); err != nil {
			r.err = err
			db.abortClaims(r.ops)
			r.wake <- false
			continue
		}
		g.reqs = append(g.reqs, r)
	}
	return g
}

// maxCarriedRecordBytes bounds the carried values of one record, so that a
// record stays within the log's limit (MaxBatchBytes of keys and inline
// values, plus this, plus per-op overhead, is below wal.MaxPayloadSize).
// Values beyond it are written to the heap only, as without carrying.
const maxCarriedRecordBytes = wal.MaxPayloadSize - MaxBatchBytes - 8<<20

// buildGroup is step 2: for every op, what its key held before it, the
// record op (carrying the value if the write is durable and the group's
// values small: groupCarries) and the index write.
// REQUIRES: db.commit.mu held.
func (db *DB) buildGroup(g *group) error {
	sc := &db.commit
	g.records = slices.Grow(sc.recordList[:0], len(g.reqs))[:len(g.reqs)]
	sc.recordList = g.records
	entries := sc.entries[:0]
	buf := sc.records[:0]
	ends := sc.ends[:0]
	for i, r := range g.reqs {
		lsn := g.first + base.LSN(i)
		g.flush = g.flush || r.sync
		ops := slices.Grow(sc.logOps[:0], len(r.ops))[:len(r.ops)]
		sc.logOps = ops
		for j := range r.ops {
			p := &r.ops[j]
			prior, err := db.priorState(p)
			if err != nil {
				return err
			}
			op := &ops[j]
			op.kind, op.key = p.kind, p.key
			op.oldKind, op.oldRaw, op.oldStored, op.freed = prior.kind, prior.raw, prior.stored, prior.extents
			if len(prior.extents) > 0 {
				if g.freed == nil { // a load of new keys frees nothing
					g.freed = make([][]alloc.Extent, len(g.reqs))
				}
				g.freed[i] = append(g.freed[i], prior.extents...)
			}
			g.delta.remove(prior)
			var now keyState
			start := len(entries) // a put's entry: entries[start:] after the switch
			switch {
			case p.kind == opDelete:
				now = keyState{kind: keyAbsent}
				if err := g.batch.Delete(p.key, nil); err != nil {
					return fmt.Errorf("heapkv: index batch: %w", err)
				}
			case p.isHeap:
				p.ptr.lsn = lsn
				entries = appendHeapEntry(entries, &p.ptr)
				now = keyState{kind: keyHeap, raw: p.ptr.rawLen, stored: p.ptr.storedLen, extents: p.ptr.extents}
				g.heapSize += int64(p.ptr.storedLen)
				if p.carried {
					op.carried = p.carry
					g.carried += int64(len(p.carry))
				} else {
					g.uncarried = true
				}
			default:
				entries = appendInlineEntry(entries, p.inline)
				now = keyState{kind: keyInline, raw: uint64(len(p.inline))}
			}
			if p.kind == opPut {
				op.entry = entries[start:len(entries):len(entries)]
				if prior.kind == keyAbsent {
					// A key that holds something is in the filter
					// already: it was added when it was written.
					db.presence.filter.Add(p.key)
				}
				if err := g.batch.Set(p.key, op.entry, nil); err != nil {
					return fmt.Errorf("heapkv: index batch: %w", err)
				}
			}
			g.delta.add(now)
			db.commit.recentWrites[string(p.key)] = recentWrite{lsn: lsn, state: now}
		}
		buf = appendRecord(buf, ops)
		ends = append(ends, len(buf))
		clear(ops) // drop the references to keys and values
	}
	if cap(sc.logOps) > maxRetainedLogOps {
		sc.logOps = nil // one huge batch does not pin its ops' space
	}
	start := 0
	for i, end := range ends {
		g.records[i] = buf[start:end:end]
		start = end
	}
	g.logBytes = int64(len(buf))
	if cap(buf) <= maxRetainedRecordBuf {
		sc.records = buf
	}
	if cap(entries) <= maxRetainedRecordBuf {
		sc.entries = entries
	}
	sc.ends = ends[:0]
	db.pruneRecentWrites()
	return nil
}

// maxRetainedLogOps is the most record ops the leader keeps room for
// between groups (a batch may hold MaxBatchOps).
const maxRetainedLogOps = 4096

// maxRetainedRecordBuf is the largest record buffer the leader keeps for
// the next group; a larger one (a group of large batches or many carried
// values) is left to the garbage collector.
const maxRetainedRecordBuf = 4 << 20

// groupCarries reports whether the records of the durable writes of reqs
// carry their heap values: if none is larger than min(CarryLimit,
// smallCarriedValue), or if all of them together take at most CarryLimit
// stored bytes. A group of large values is bandwidth-bound: writing its
// bytes to the log as well as to the heap costs more than the heap flush
// that carrying saves (BENCHMARKS.md, "Durable writes": 16 KiB and 64 KiB
// values from 64 writers), so it goes heap first; a small group is
// latency-bound and takes one flush. A group of many small values is
// latency-bound too, however many there are: sending one heap-first cost
// its flush a heap fdatasync (a median 0.67 ms against the log's 0.17 ms),
// during which more writers queued, so that the next group was large as
// well (BENCHMARKS.md, "Synced writes: small values always carried,
// records written by their flush"). NoSync writes never carry their
// values: nothing waits for their flush, and the log would write every
// byte twice.
func (db *DB) groupCarries(reqs []*commitReq) bool {
	total, largest := 0, 0
	for _, r := range reqs {
		if !r.sync {
			continue
		}
		for i := range r.ops {
			n := len(r.ops[i].carry)
			total += n
			largest = max(largest, n)
		}
	}
	return total <= db.opts.CarryLimit || largest <= min(db.opts.CarryLimit, smallCarriedValue)
}

// smallCarriedValue is the largest stored value that a durable group
// carries whatever its total (groupCarries): 4 KiB and 4,100-byte values
// from 64 synced writers ran 1.23-1.42x faster carried in groups beyond
// CarryLimit than sent heap first (refinement 40); 16 KiB values ran
// faster heap first (refinement 18's CarryLimit sweep).
const smallCarriedValue = 8 << 10

// appendGroup is step 3: append the records to the log's buffer
// (wal.Log.AppendBuffered; the leader writes it when it reaches 64 KiB)
// and hand the group to the pipeline. A durable group's records are
// written by the flush that makes them durable (wal.Log.SyncTo writes the
// buffer first), with every group appended since the last flush in one
// write call: a pwrite per group (1.4 writes per group in a synced 1 KB
// load from 16 threads) cost more than the flush's one write adds to it
// (BENCHMARKS.md, "Synced writes: small values always carried, records
// written by their flush"). A NoSync group's are written by the log writer
// (logWriter), soon after, unless a flush takes them first. Once the
// unsynced writes reach NoSyncFlushBytes the group kicks a background
// flush without waiting for it; at twice that it waits for one
// (backpressure).
// REQUIRES: db.commit.mu held.
func (db *DB) appendGroup(g *group) error {
	unsynced := db.durable.unsynced.Add(g.logBytes + g.heapSize)
	kickFlush := unsynced >= db.opts.NoSyncFlushBytes
	g.flush = g.flush || unsynced >= db.maxUnsyncedBytes()
	if g.uncarried {
		// Before the append, so that a syncer that sees the records also
		// sees that it must sync the heap first (syncThrough).
		db.durable.heapDirty.Store(g.last())
	}
	if _, err := db.log.Load().AppendBuffered(g.records); err != nil {
		return fmt.Errorf("heapkv: append to log: %w", err)
	}
	if !g.flush {
		db.pipe.kickWriter()
	}
	clear(g.records) // the leader's scratch (buildGroup): drop the references
	g.records = nil
	db.pipe.push(g, kickFlush)
	return nil
}

// maxUnsyncedBytes is how many bytes of unsynced writes make a group wait
// for a flush: twice NoSyncFlushBytes, the point where the background
// flushes kicked at NoSyncFlushBytes have not kept up.
func (db *DB) maxUnsyncedBytes() int64 {
	return min(db.opts.NoSyncFlushBytes, math.MaxInt64/2) * 2
}

// minRecentLimit is the size at which recentWrites is first pruned.
const minRecentLimit = 4096

// priorState returns what p's key holds before p: the state the last
// write of a recent group left (that group may not be applied yet), else
// the writer's prefetch, else the index. A key missing from recentWrites
// was last written at or below every LSN a queued writer prefetched at
// (pruneRecentWrites), so the prefetch saw that write.
// REQUIRES: db.commit.mu held.
func (db *DB) priorState(p *preparedOp) (keyState, error) {
	if w, ok := db.commit.recentWrites[string(p.key)]; ok {
		return w.state, nil // the key's last write: nothing is newer
	}
	if p.prefetched {
		return p.prior, nil
	}
	return db.indexState(p.key)
}

// pruneRecentWrites forgets, once recentWrites reaches recentLimit, the
// writes no queued writer can need: those applied to the index at or below
// the smallest LSN a writer prefetched at. Every write of a group not yet
// applied stays, since the index does not hold it yet.
// REQUIRES: db.commit.mu held.
func (db *DB) pruneRecentWrites() {
	recent := db.commit.recentWrites
	if len(recent) < db.commit.recentLimit {
		return
	}
	bound := db.applied.Load()
	if m, n := db.writePins.min(); n > 0 {
		bound = min(bound, m)
	}
	for k, w := range recent {
		if w.lsn <= bound {
			delete(recent, k)
		}
	}
	db.commit.recentLimit = max(minRecentLimit, 2*len(recent))
}
