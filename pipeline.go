package heapkv

import (
	"cmp"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/internal/base"
)

// The commit pipeline: groups appended to the log and not yet applied to
// the index, in LSN order (DB.pipe). The leader appends a group and moves
// on; a group that must be durable waits for the syncer, a goroutine that
// flushes everything appended so far with one device flush (syncThrough)
// while the next leader builds and appends the next group. A group is
// applied (advance, run by applyLoop after each flush, and by the leader
// for groups that need none) once every group before it is, and once it is
// durable if it must be: its index batch is committed, the applied LSN moves to
// its last LSN, its new extents are published and the ones it freed are
// queued, and its writers wake. So the next group never waits behind a
// device flush, only the writers of the groups the flush covers do, and
// they are released together.
//
// Readers see a group once it is applied, so a durable write is never
// visible before it is durable, and every reader sees a prefix of the
// commit order.
//
// Every group leaves its records in the log's buffer (appendGroup). A
// durable group's are written by the flush that makes them durable, with
// everything appended since the last one; a NoSync group's by the log
// writer (logWriter) a few milliseconds later, together with the groups
// that came meanwhile, unless a flush has taken them along first. A NoSync
// group needs no flush to be applied. Its bytes count towards
// NoSyncFlushBytes: at that mark the group kicks the syncer for a
// background flush and goes on; at twice it, it waits for a flush like a
// durable group (backpressure).

// pipeline is the queue of appended groups.
type pipeline struct {
	// mu guards pending, appended and flushWaiting; it is held for no I/O.
	mu       sync.Mutex
	pending  []*group // appended, not applied; ascending LSN
	appended base.LSN // the last LSN appended
	// flushWaiting counts the pending groups that must be flushed.
	flushWaiting int
	kick         chan struct{} // wakes the syncer; capacity 1
	// applyKick wakes applyLoop after a flush; capacity 1.
	applyKick chan struct{}
	// writeKick wakes logWriter after a buffered append; capacity 1.
	writeKick chan struct{}
}

// push queues g, just appended, and wakes the syncer if g must be flushed
// or if flush asks for a background flush.
func (p *pipeline) push(g *group, flush bool) {
	p.mu.Lock()
	p.pending = append(p.pending, g)
	p.appended = g.last()
	if g.flush {
		p.flushWaiting++
	}
	p.mu.Unlock()
	if g.flush || flush {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// kickWriter wakes the log writer: the log's buffer holds records.
func (p *pipeline) kickWriter() {
	select {
	case p.writeKick <- struct{}{}:
	default:
	}
}

// waitingForFlush reports whether a pending group must be flushed.
func (p *pipeline) waitingForFlush() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flushWaiting > 0
}

// appendedLSN returns the last LSN appended.
func (p *pipeline) appendedLSN() base.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.appended
}

// next removes and returns the first pending group if it may be applied:
// it need not be flushed, or the log is durable through it.
func (p *pipeline) next(synced base.LSN) *group {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) == 0 {
		return nil
	}
	g := p.pending[0]
	if g.flush && g.last() > synced {
		return nil
	}
	p.pending[0] = nil
	p.pending = p.pending[1:]
	if g.flush {
		p.flushWaiting--
	}
	return g
}

// takeAll removes and returns every pending group.
func (p *pipeline) takeAll() []*group {
	p.mu.Lock()
	defer p.mu.Unlock()
	gs := p.pending
	p.pending = nil
	p.flushWaiting = 0
	return gs
}

// advance applies, in LSN order, every pending group that may be applied.
// After a failure it fails every pending group instead: their records may
// be on disk, so their claims stay allocated and recovery decides.
func (db *DB) advance() {
	db.applier.mu.Lock()
	defer db.applier.mu.Unlock()
	for {
		if err := db.failed(); err != nil {
			// The heap writer lets go of the writers' values first.
			db.drainCarried()
			for _, g := range db.pipe.takeAll() {
				g.finish(err)
			}
			return
		}
		g := db.pipe.next(db.log.Load().SyncedLSN())
		if g == nil {
			return
		}
		if !db.heapWritten(g) {
			// The heap writer has not reached g: write its values here.
			db.drainCarried()
			if err := db.failed(); err != nil { // they may have been dropped
				g.finish(err)
				continue
			}
		}
		db.invalidateEntries(g, (*entryCache).begin)
		err := g.batch.Commit(pebble.NoSync)
		if err == nil {
			db.storeEntries(g)
		} else {
			db.invalidateEntries(g, (*entryCache).end)
		}
		if err != nil {
			g.finish(db.fail(fmt.Errorf("apply to index: %w", err)))
			continue
		}
		db.applied.Store(g.last())
		db.finishGroup(g, db.heapWriteErr(g))
	}
}

// invalidateEntries runs step (entryCache.begin or end) for every key g
// writes: the index-entry cache's invalidation around the commit of g's
// batch (entrycache.go).
func (db *DB) invalidateEntries(g *group, step func(*entryCache, []byte)) {
	if db.ecache == nil {
		return
	}
	for _, r := range g.reqs {
		for i := range r.ops {
			step(db.ecache, r.ops[i].key)
		}
	}
}

// storeEntries ends the invalidation of every key g wrote, once the index
// holds g's batch, and puts the entries it wrote into the index-entry
// cache (write-through): a key written recently is likely written again,
// and the write looks up the entry it replaces (lookupState). The batch
// holds one write per op of g, in order (buildGroup), so every begin gets
// its end. A key the batch writes twice ends with its last entry; a delete
// stores an empty entry, which answers "absent". REQUIRES: db.applier.mu
// held (no other group is applied meanwhile), after the begin step.
func (db *DB) storeEntries(g *group) {
	if db.ecache == nil {
		return
	}
	r := g.batch.Reader()
	n := 0
	for {
		kind, key, value, ok, err := r.Next()
		if !ok || err != nil {
			break
		}
		switch kind {
		case pebble.InternalKeyKindSet:
			db.ecache.storeEnd(key, value)
		case pebble.InternalKeyKindDelete:
			db.ecache.storeEnd(key, nil) // empty: absent
		default:
			db.ecache.end(key)
		}
		n++
	}
	// A batch we built cannot be illegible; if it were, the ops it did
	// not yield still end, so their shards take fills again.
	for _, r := range g.reqs {
		for i := range r.ops {
			if n--; n < 0 {
				db.ecache.end(r.ops[i].key)
			}
		}
	}
}

// checkpointDueLocked reports whether the log has grown enough since the
// last checkpoint to ask for one: CheckpointLogBytes of records not
// counting the values they carry, or carriedLogLimit of records in all;
// on a full disk, DiskReserve/8 of records, so that checkpoints come
// sooner and each gives log space back. REQUIRES: db.applier.mu held.
func (db *DB) checkpointDueLocked() bool {
	a := &db.applier
	if db.reserve.diskFull.Load() && a.sinceCkpt >= db.opts.DiskReserve/8 {
		return true
	}
	return db.opts.CheckpointLogBytes > 0 &&
		(a.sinceCkpt-a.sinceCkptCarried >= db.opts.CheckpointLogBytes || a.sinceCkpt >= db.carriedLogLimit())
}

// carriedLogLimit is how much log, carried values included, a checkpoint
// interval may take: CheckpointLogBytes, or a sixteenth of the heap file
// if that is more, up to maxCarriedIntervals times CheckpointLogBytes.
//
// A checkpoint writes back every heap page written since the last one,
// pages scattered over the heap wherever the allocator found room. The
// longer the interval, the more of those pages take several writes
// before it, and the more of them lie next to each other: on a 2.4 GB
// heap of 4 KiB values, synced YCSB A made 0.83 device write requests an
// update with 256 MiB intervals against 1.03 with 64 MiB, and with this
// limit ran 1.13x as fast (median of five pairs; BENCHMARKS.md,
// "Checkpoint intervals that grow with the heap"). What grows is the
// log's disk space (with its spares about one interval:
// spareLogSegments) and the replay after a crash, which reads the
// interval's records and writes their carried values to the heap. Records
// without carried values (inline values, pointers to values written heap
// first) still ask for a checkpoint every CheckpointLogBytes: replaying
// them is what makes the index grow on the way back from a full disk,
// which DiskReserve covers.
func (db *DB) carriedLogLimit() int64 {
	c := db.opts.CheckpointLogBytes
	heap := int64(db.alloc.Segments()) * db.geom.SegmentBytes()
	return min(max(c, heap/16), maxCarriedIntervals*c)
}

// maxCarriedIntervals bounds carriedLogLimit as a multiple of
// CheckpointLogBytes (256 MiB with the default), and with it the replay
// after a crash.
const maxCarriedIntervals = 4

// finishGroup is the last step of a group, once it is in the index: count,
// ask for a checkpoint when the log has grown, publish the new extents,
// queue the freed ones, and wake the writers.
// Its writers get err, nil unless the heap writer met an error writing
// its values (heapWriteErr). REQUIRES: db.applier.mu held.
func (db *DB) finishGroup(g *group, err error) {
	a := &db.applier
	a.counters = a.counters.plus(g.delta)
	a.sinceCkpt += g.logBytes
	a.sinceCkptCarried += g.carried
	if db.checkpointDueLocked() {
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
		if g.freed != nil {
			a.frees.push(g.first+base.LSN(i), g.freed[i], db.geom.BlockSize)
			db.vcache.drop(g.freed[i])
		}
	}
	db.releaseFreesLocked()
	db.stats.commits.Add(int64(len(g.reqs)))
	db.stats.groups.Add(1)
	g.finish(err)
}

// flushPending makes every group appended so far durable and applies every
// pending group. It is how Sync, checkpoints and the syncer drain the
// pipeline; a failure fails the database.
func (db *DB) flushPending() error {
	err := db.syncThrough(db.pipe.appendedLSN())
	if err != nil {
		err = db.fail(err)
	}
	db.advance()
	return err
}

// The log's sync mark (wal.Log.SyncMark) says how far the log was
// synced, so that damage to synced records reads as corruption, not as a
// torn tail. Records vouch for every flush before theirs, so only the
// newest records need the mark; updating it costs a flush of its own. The
// syncer brings it up to date once the log has been idle for markDelay
// after a flush, and under steady load at most every markInterval; Sync,
// rotations and Close update it too. The window this leaves: damage that
// destroys the records written since the last mark update (at most
// markInterval of writes) and the records after them reads as a torn tail.
const (
	markDelay    = 2 * time.Millisecond
	markInterval = 10 * time.Millisecond
)

// applyLoop applies the groups the syncer's flushes made durable (and,
// after a failure, fails the pending ones), until Close. (A writer that
// waits after Close began flushes and applies its group itself: await.)
func (db *DB) applyLoop() {
	defer db.bg.wg.Done()
	for {
		select {
		case <-db.bg.stop:
			return
		case <-db.pipe.applyKick:
			db.advance()
		}
	}
}

// syncer flushes the groups that must be durable, one device flush for
// everything appended when it starts, until Close; it also runs the
// background flushes that NoSyncFlushBytes of unsynced writes ask for
// (appendGroup), with no group waiting for them.
func (db *DB) syncer() {
	defer db.bg.wg.Done()
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	defer idle.Stop()
	lastMark := time.Now()
	mark := func() {
		lastMark = time.Now()
		if log := db.log.Load(); log != nil && db.failed() == nil {
			if err := syncLogMark(log); err != nil {
				db.fail(fmt.Errorf("heapkv: update the log's sync mark: %w", err))
			}
		}
	}
	for {
		select {
		case <-db.bg.stop:
			return
		case <-db.pipe.kick:
			// A kick queued during the last flush may find nothing
			// left to do: no group waits, and the unsynced writes
			// that asked for a background flush are covered.
			if !db.pipe.waitingForFlush() && db.durable.unsynced.Load() < db.opts.NoSyncFlushBytes {
				continue
			}
			// The heap writer writes the carried values of the groups
			// this flush covers while the device flushes.
			db.kickHeapWriter()
			// Flush; if more was appended meanwhile, leave applying the
			// groups this flush made durable to applyLoop, so that the
			// next flush starts now, not after the index writes and
			// wake-ups. Otherwise apply them here: a lone writer is woken
			// without another goroutine in between.
			target := db.pipe.appendedLSN()
			err := db.syncThrough(target)
			if err != nil {
				db.fail(err)
			}
			if err == nil && db.pipe.appendedLSN() > target {
				select {
				case db.pipe.applyKick <- struct{}{}:
				default:
				}
			} else {
				db.advance()
			}
			if err != nil {
				continue
			}
			if time.Since(lastMark) >= max(markInterval, db.opts.markDelay) {
				mark()
			}
			idle.Reset(cmp.Or(db.opts.markDelay, markDelay))
		case <-idle.C:
			mark()
		}
	}
}

// logWriter writes the log records of NoSync groups that wait in the log's
// buffer (wal.Log.AppendBuffered), until Close: once a group kicks it, it
// waits NoSyncWriteDelay, so that the groups committed meanwhile share
// the write call, and writes the buffer. A record so waits in memory at
// most NoSyncWriteDelay plus the time a write takes. Everything else that
// must see the records written writes the buffer itself: every flush
// (syncThrough: the syncer for durable groups, Sync, checkpoints, the
// index's flush hook) writes it first.
// After Close begins, the checkpoint's flush writes what is left.
func (db *DB) logWriter() {
	defer db.bg.wg.Done()
	delay := max(db.opts.NoSyncWriteDelay, 0)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-db.bg.stop:
			return
		case <-db.pipe.writeKick:
		}
		if delay > 0 {
			timer.Reset(delay)
			select {
			case <-db.bg.stop:
				return
			case <-timer.C:
			}
		}
		log := db.log.Load()
		if log == nil || db.failed() != nil {
			continue
		}
		if err := log.WriteBuffered(); err != nil {
			db.fail(fmt.Errorf("heapkv: write buffered log records: %w", err))
		}
	}
}
