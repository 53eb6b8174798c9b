package heapkv

import (
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"unsafe"

	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/base"
)

// pinSet records the LSNs that open readers may still see the index as of.
// A reader pins the last applied LSN before it reads the index; a heap
// extent freed by a record at LSN f may be reused only once every pin is at
// least f (DESIGN invariant 5b). Pins are sharded so that concurrent readers
// rarely share a lock.
type pinSet struct {
	shards []pinShard
}

// pinShard is one shard of a pinSet, padded to 64 bytes, the cache line
// of amd64 and arm64: the shard array's allocation size class is a
// multiple of 64 bytes, which starts it on a line, so no two shards share
// one.
type pinShard struct {
	pinShardState
	_ [64 - unsafe.Sizeof(pinShardState{})]byte
}

type pinShardState struct {
	// mu guards the fields below.
	mu sync.Mutex
	// Readers mostly pin the same LSN (the last applied one), so the
	// shard counts the pins of one LSN outside the map: lsn and n, with
	// n == 0 when none.
	lsn    base.LSN
	n      int
	counts map[base.LSN]int // other pinned LSNs -> number of readers holding each
}

// add counts one more pin of lsn. REQUIRES: s.mu held.
func (s *pinShardState) add(lsn base.LSN) {
	switch {
	case s.n == 0 || s.lsn == lsn:
		s.lsn = lsn
		s.n++
	default:
		s.counts[lsn]++
	}
}

// remove counts one pin of lsn less. REQUIRES: s.mu held.
func (s *pinShardState) remove(lsn base.LSN) {
	if s.n > 0 && s.lsn == lsn {
		s.n--
		return
	}
	if s.counts[lsn]--; s.counts[lsn] <= 0 {
		delete(s.counts, lsn)
	}
}

// pinToken is returned by pin and passed back to unpin.
type pinToken struct {
	shard uint32
	lsn   base.LSN
}

func newPinSet() *pinSet {
	n := 2 * runtime.GOMAXPROCS(0)
	p := &pinSet{shards: make([]pinShard, n)}
	for i := range p.shards {
		p.shards[i].counts = make(map[base.LSN]int)
	}
	return p
}

// shard picks a shard at random: a counter shared by every reader would
// put one cache line under every pin.
func (p *pinSet) shard() uint32 { return rand.Uint32N(uint32(len(p.shards))) }

func (p *pinSet) pin(lsn base.LSN) pinToken {
	i := p.shard()
	s := &p.shards[i]
	s.mu.Lock()
	s.add(lsn)
	s.mu.Unlock()
	return pinToken{shard: i, lsn: lsn}
}

// pinLoad pins the value of v, loading it while holding the shard's lock,
// so that a concurrent min either counts this pin or started its scan of
// the shard before the load (and so saw a v no larger than this one).
func (p *pinSet) pinLoad(v *base.AtomicLSN) pinToken {
	i := p.shard()
	s := &p.shards[i]
	s.mu.Lock()
	lsn := v.Load()
	s.add(lsn)
	s.mu.Unlock()
	return pinToken{shard: i, lsn: lsn}
}

func (p *pinSet) unpin(t pinToken) {
	s := &p.shards[t.shard]
	s.mu.Lock()
	s.remove(t.lsn)
	s.mu.Unlock()
}

// min returns the smallest pinned LSN, or math.MaxUint64 when nothing is
// pinned, and the number of pins.
func (p *pinSet) min() (base.LSN, int) {
	m, n := base.LSN(math.MaxUint64), 0
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		if s.n > 0 {
			m = min(m, s.lsn)
			n += s.n
		}
		for lsn, c := range s.counts {
			m = min(m, lsn)
			n += c
		}
		s.mu.Unlock()
	}
	return m, n
}

// freeQueue holds heap extents freed by committed records but not yet
// reusable: they wait until the freeing record is durable and no reader
// pinned below it remains (DESIGN invariant 5). Only the holder of
// DB.applier.mu pushes or releases, which keeps a checkpoint's allocation
// snapshot and the queue consistent with each other.
type freeQueue struct {
	items []pendingFree // ascending LSN
	head  int
	bytes int64
}

type pendingFree struct {
	lsn base.LSN
	ext alloc.Extent
}

func (q *freeQueue) push(lsn base.LSN, exts []alloc.Extent, blockSize int) {
	for _, e := range exts {
		q.items = append(q.items, pendingFree{lsn: lsn, ext: e})
		q.bytes += int64(e.Len) * int64(blockSize)
	}
}

// release frees every extent whose LSN is at most limit.
func (q *freeQueue) release(limit base.LSN, a *alloc.Allocator, blockSize int) {
	for q.head < len(q.items) && q.items[q.head].lsn <= limit {
		e := q.items[q.head].ext
		a.Free(e)
		q.bytes -= int64(e.Len) * int64(blockSize)
		q.head++
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 1024 && q.head > len(q.items)/2 {
		q.items, q.head = append(q.items[:0], q.items[q.head:]...), 0
	}
}

// pending calls fn for every extent still waiting.
func (q *freeQueue) pending(fn func(alloc.Extent)) {
	for _, it := range q.items[q.head:] {
		fn(it.ext)
	}
}

// releaseFreesLocked returns to the allocator every deferred free that is
// safe to reuse (invariant 5):
//
//   - its record is durable, and more: vouched for on disk, i.e. at or below
//     the log's VouchedLSN or the last checkpoint. Recovery reads back the
//     values of records it cannot prove durable and cuts the log at the
//     first one that is not intact; had a durable but unvouched record's
//     freed blocks been reused, a value it superseded would read back
//     wrong, and an acknowledged write would be dropped as a torn tail;
//   - no reader pinned below it remains.
//
// REQUIRES: db.applier.mu held.
func (db *DB) releaseFreesLocked() {
	log := db.log.Load()
	if log == nil {
		return
	}
	limit := max(log.VouchedLSN(), db.ckpt.lsn.Load())
	if pinned, n := db.pins.min(); n > 0 {
		limit = min(limit, pinned)
	}
	if limit == math.MaxUint64 {
		return
	}
	db.applier.frees.release(limit, db.alloc, db.geom.BlockSize)
}
