package heapkv

import (
	"fmt"

	"github.com/heapkv/heapkv/alloc"
)

// Walking ahead of a forward scan, to prefetch the values it will read next.
//
// Values written in a random key order lie apart in the heap, and a scan
// that reads them one after another waits for memory at each: on 2.4
// million 1 KB values loaded in YCSB's hashed order, about 650 ns a value
// (BENCHMARKS.md, "Scanned values viewed in the map"). Touching a value's
// lines early with ordinary loads does not help (BENCHMARKS.md, "The
// heap's page-cache folios"): a load that misses holds its place in the
// processor's reorder window until memory answers, so the stall only
// moves. A prefetch instruction retires at once (internal/prefetch).
//
// To know the next values, the scan must have read their index entries.
// So once a forward scan has read values at aheadStreak steps in a row,
// the iterator keeps its Pebble iterator aheadValues entries past its own
// position: it copies each entry it passes into a ring of slots (key and
// raw entry), prefetches the lines of the value the entry points to
// (mirror.Set.PrefetchMapped), and serves Key, Value and ViewValue from
// the slot at its position. Nothing else changes: the values are still
// read, verified and viewed as before, one at a time. Four entries ahead
// measured best in YCSB E over scattered values (eight and sixteen were
// slower, as E's scans are 1-100 values long and each slot costs a copy),
// and prefetching every line of a value better than its first line only
// (BENCHMARKS.md, "Scans that prefetch the values ahead").
//
// Values that lie one after another in the heap, as after Compact with
// Cluster, need none of this: the processor fetches the lines that follow
// a read of its own accord. So a scan walks ahead only when the last
// aheadJumps heap values it read each began somewhere other than where
// the one before ended (ahead.jumps). Three, not two: one value written
// since a clustering lies elsewhere, and the scan jumps twice, into it
// and back out of it.
//
// The walk ahead serves iterators without a transaction's writes (whose
// merge needs Pebble's iterator at the current key) over a mapped heap.
// Any move other than Next ends it: SeekGE, SeekLT, First and Last
// reposition the Pebble iterator anyway, and Prev, which changes
// direction, seeks it back to the current key as a direction change
// always did (reverse).

const (
	aheadValues = 4 // entries the Pebble iterator runs ahead of the scan
	aheadStreak = 2 // Next calls in a row after a value read before walking ahead
	aheadJumps  = 3 // heap values in a row, each not where the one before ended
)

// ahead is an iterator's walk ahead: slots[cur] holds the current entry,
// the n-1 slots after it (circularly) the entries after it, and the Pebble
// iterator stands after the last of them (pv: at a key).
type ahead struct {
	on    bool
	slots [aheadValues + 1]aheadSlot
	cur   int // slot of the current entry
	n     int // entries held, the current one included
	// end is the block after the last heap value whose entry the iterator
	// decoded, and jumps counts the entries in a row whose value did not
	// start there.
	end   uint64
	jumps int
}

// aheadSlot is one entry the walk passed. A heap entry is decoded when it
// is copied (its value is prefetched), and the iterator takes the decoded
// entry from the slot rather than decoding it again.
type aheadSlot struct {
	key []byte
	raw []byte
	err error // reading the entry's value from the index failed

	decoded bool  // e and decErr hold raw decoded
	e       entry // its extents in exts
	decErr  error
	exts    []alloc.Extent
}

// startAhead begins walking ahead from the current entry, if the scan
// allows. REQUIRES: it.mu held, the iterator at a key of the index.
func (it *Iterator) startAhead() {
	if it.ah.on || it.streak < aheadStreak || it.ah.jumps < aheadJumps || it.rr != nil || len(it.buf) > 0 ||
		it.ra.slow || !it.db.heap.Mapped() {
		return
	}
	it.ah.on, it.ah.cur, it.ah.n = true, 0, 0
	it.pushAhead()
	it.pv = it.pit.Next()
	it.walkAhead()
}

// pushAhead copies the entry at the Pebble iterator into the next free
// slot.
func (it *Iterator) pushAhead() {
	ah := &it.ah
	s := &ah.slots[(ah.cur+ah.n)%len(ah.slots)]
	s.key = append(s.key[:0], it.pit.Key()...)
	raw, err := it.pit.ValueAndErr()
	s.raw, s.err, s.decoded = append(s.raw[:0], raw...), err, false
	ah.n++
}

// walkAhead walks the Pebble iterator on until aheadValues entries follow
// the current one or it runs out, prefetching the value of each entry it
// copies: a heap value stored as it is in one extent, the kind a scan
// views in the map, while the scan reads values (the last step read one)
// out of the map (not switched to pread batches).
func (it *Iterator) walkAhead() {
	ah := &it.ah
	for it.pv && ah.n <= aheadValues {
		it.pushAhead()
		s := &ah.slots[(ah.cur+ah.n-1)%len(ah.slots)]
		if it.streak > 0 && !it.ra.slow && s.err == nil && len(s.raw) > 0 && s.raw[0] == entryHeap {
			s.decErr = it.db.decodeEntryTo(&s.e, s.key, s.raw, s.exts[:0])
			s.exts, s.decoded = s.e.ptr.extents[:0], true
			if s.decErr == nil && s.e.ptr.viewable() {
				it.db.heap.PrefetchMapped(s.e.ptr.extents[0].Start, int(s.e.ptr.storedLen))
			}
		}
		it.pv = it.pit.Next()
	}
}

// nextAhead is Next while walking ahead. REQUIRES: it.mu held, it.ah.on.
func (it *Iterator) nextAhead() bool {
	ah := &it.ah
	ah.cur = (ah.cur + 1) % len(ah.slots)
	ah.n--
	it.walkAhead()
	if ah.n > 0 {
		it.valid = true
		return true
	}
	it.valid = false
	if err := it.pit.Error(); err != nil {
		it.setErr(indexError("iterator", err))
	}
	return false
}

// aheadEntryTo decodes the current entry into e while walking ahead, its
// extents in it.exts: a copy of the slot's entry when the walk decoded it
// already, so that the slot can be refilled while e is in use.
func (it *Iterator) aheadEntryTo(e *entry) error {
	s := &it.ah.slots[it.ah.cur]
	switch {
	case s.err != nil:
		return indexError(fmt.Sprintf("iterator: value of %q", s.key), s.err)
	case !s.decoded:
		return it.db.decodeEntryTo(e, s.key, s.raw, it.exts)
	}
	*e = s.e
	e.ptr.extents = append(it.exts[:0], s.e.ptr.extents...)
	return s.decErr
}

// note records where the value of a heap entry the iterator decoded lies.
func (ah *ahead) note(p *pointer) {
	if p.extents[0].Start == ah.end {
		ah.jumps = 0
	} else {
		ah.jumps++
	}
	ah.end = p.extents[len(p.extents)-1].End()
}

// stopAhead ends the walk ahead; the Pebble iterator is past the current
// key and must be repositioned by the caller.
func (it *Iterator) stopAhead() { it.ah.on, it.ah.n = false, 0 }
