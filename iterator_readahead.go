package heapkv

import (
	"bytes"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/alloc"
)

// Reading heap values during scans.
//
// With the heap mapped, an iterator copies each value out of the map
// (mappedValue): a copy per value, no system call, and nothing read that
// the scan does not ask for. Without a map, or once copies out of the map
// show that the scan waits for the disk, reading heap values one at a time
// costs a read (and a device wait) per value. When an iterator moves
// forward with Next and reads the value at each step, it then switches to
// readahead: a second Pebble iterator over the same
// view (a Clone) runs ahead, collects the heap pointers of the next batch
// of keys, and the batch's extents are read in block order, coalescing
// extents that lie close together into one read (values written together
// usually sit next to each other in a segment), with reads of separate
// runs issued in parallel. Each value's CRC is verified as usual; a value
// that fails, or one the batch did not cover, is read the ordinary way
// (readValue), which also produces the error. Values served from a batch
// alias its read buffer, like inline values alias the index.
//
// The batch doubles from raMinBatch up to raMaxBatch keys (or raMaxBytes
// of stored bytes), so short scans read little ahead.

const (
	raStreak   = 2        // sequential value reads before readahead starts
	raMinBatch = 16       // keys in the first batch
	raMaxBatch = 256      // keys in a batch at most
	raMaxBytes = 8 << 20  // stored bytes in a batch at most
	raMaxRun   = 4 << 20  // bytes in one coalesced read at most
	raGap      = 16 << 10 // read through holes up to this size rather than split
	raReaders  = 4        // parallel reads of separate runs (at most GOMAXPROCS)

	// A copy out of the map slower than raSlowCopy plus raSlowCopyPerByte
	// per byte waited for the device: copies of resident pages run at
	// several GB/s; a read from an SSD takes tens of microseconds.
	raSlowCopy        = 30 * time.Microsecond
	raSlowCopyPerByte = time.Nanosecond
	raTimeEvery       = 4 // a scan times one copy in raTimeEvery (reading the clock costs)
	raSlowRun         = 3 // timed copies in a row that, slow, switch a scan to pread batches
)

// readahead is an iterator's lookahead state.
type readahead struct {
	la    *pebble.Iterator // positioned at the next entry to collect
	laOK  bool
	batch int
	q     []raValue // collected values in key order
	qi    int
	off   bool // readahead failed once: stay off
	// slow is set when a value copied out of the heap's map during a
	// forward scan took as long as a device read: the scan then reads
	// ahead with pread batches, as it does without a map.
	slow    bool
	copies  int // values copied out of the map
	slowRun int // timed copies in a row that were slow
	// arena holds the runs of the current batch. It is reused by the next
	// batch: a batch is read only when the iterator has moved past every
	// value of the previous one, whose slices were valid until that move.
	arena []byte
}

type raValue struct {
	key []byte
	ptr pointer
	val []byte // nil: read the ordinary way
}

// mappedValue reads a value stored as it is (no codec) straight out of the
// heap's map into the iterator's value buffer, which the next value
// reuses: no system call, no allocation, one copy. Nothing is read ahead:
// the page cache holds the heap, and a short scan reads only what it asks
// for. During a forward scan one copy in raTimeEvery is timed; raSlowRun
// timed copies in a row that took as long as a device read (raSlowCopy)
// show the scan waits for the disk, and the iterator switches to pread
// batches (ra.slow), which keep several reads in flight. (One slow copy
// alone may be a preemption.)
func (it *Iterator) mappedValue(key []byte, ptr *pointer) ([]byte, error) {
	n := ptr.storedLen
	if it.vbuf == nil {
		it.vbuf = iterValueBufs.Get().(*[]byte)
	}
	buf := *it.vbuf
	if uint64(cap(buf)) < n {
		buf = make([]byte, n, max(n, 2*uint64(cap(buf))))
		*it.vbuf = buf
	}
	if !it.timeMapRead() {
		return it.db.readStored(key, ptr, buf[:n], it.db.heap.ReadMapped)
	}
	t0 := time.Now()
	v, err := it.db.readStored(key, ptr, buf[:n], it.db.heap.ReadMapped)
	if err == nil {
		it.noteMapRead(n, time.Since(t0))
	}
	return v, err
}

// timeMapRead counts a read of a value out of the heap's map and reports
// whether to time it: one in raTimeEvery during a forward scan.
func (it *Iterator) timeMapRead() bool {
	it.ra.copies++
	return it.streak >= raStreak && len(it.buf) == 0 && it.ra.copies%raTimeEvery == 0
}

// noteMapRead records that a timed read of n bytes out of the heap's map
// took d, and switches the scan to pread batches after raSlowRun slow ones
// in a row.
func (it *Iterator) noteMapRead(n uint64, d time.Duration) {
	if d <= raSlowCopy+time.Duration(n)*raSlowCopyPerByte {
		it.ra.slowRun = 0
		return
	}
	it.ra.slowRun++
	it.ra.slow = it.ra.slowRun >= raSlowRun
}

// iterValueBufs recycles iterators' value buffers (Iterator.vbuf): a short
// scan would otherwise allocate one.
var iterValueBufs = sync.Pool{New: func() any { return new([]byte) }}

// putValueBuf returns an iterator's value buffer to iterValueBufs.
func putValueBuf(bp *[]byte) {
	if bp != nil && cap(*bp) <= maxPooledBuf {
		iterValueBufs.Put(bp)
	}
}

// raArenas recycles batch buffers between iterators: a short range scan
// would otherwise touch fresh memory for every batch, which costs more
// than the reads.
var raArenas sync.Pool // *[]byte

// close releases the lookahead; the iterator is closing.
func (ra *readahead) close() { ra.drop() }

// drop forgets collected values (the iterator moved other than by Next, or
// is closing: the values' slices are no longer valid either way) and
// recycles the buffer.
func (ra *readahead) drop() {
	if ra.la != nil {
		ra.la.Close()
		ra.la = nil
	}
	if ra.arena != nil && cap(ra.arena) <= 2*raMaxBytes {
		a := ra.arena[:0]
		raArenas.Put(&a)
	}
	ra.q, ra.qi, ra.batch, ra.arena = nil, 0, 0, nil
}

// heapValueAhead returns the value of the heap entry ptr at the current
// key, from readahead when the scan pattern allows. REQUIRES: it.mu held.
func (it *Iterator) heapValueAhead(key []byte, ptr *pointer) ([]byte, error) {
	ra := &it.ra
	if !ra.slow && ptr.codec == CodecNone && it.db.heap.Mapped() {
		return it.mappedValue(key, ptr)
	}
	if ra.off || it.streak < raStreak || len(it.buf) > 0 {
		return it.db.loadValue(key, ptr)
	}
	for {
		for ra.qi < len(ra.q) && bytes.Compare(ra.q[ra.qi].key, key) < 0 {
			ra.q[ra.qi] = raValue{}
			ra.qi++
		}
		if ra.qi < len(ra.q) {
			v := &ra.q[ra.qi]
			if !bytes.Equal(v.key, key) || v.val == nil {
				break // not collected (inline) or not verified: read it here
			}
			val := v.val
			*v = raValue{}
			ra.qi++
			return val, nil
		}
		if !it.fillAhead(key) {
			break
		}
	}
	return it.db.loadValue(key, ptr)
}

// fillAhead collects and reads the next batch, starting at key or after.
// It reports whether it collected anything.
func (it *Iterator) fillAhead(key []byte) bool {
	ra := &it.ra
	if ra.la == nil {
		la, err := it.pit.Clone(pebble.CloneOptions{})
		if err != nil {
			ra.off = true
			return false
		}
		ra.la, ra.laOK = la, la.SeekGE(key)
	} else if ra.laOK && bytes.Compare(ra.la.Key(), key) < 0 {
		ra.laOK = ra.la.SeekGE(key)
	}
	if ra.arena == nil {
		if a, ok := raArenas.Get().(*[]byte); ok {
			ra.arena = *a
		}
	}
	ra.batch = min(max(2*ra.batch, raMinBatch), raMaxBatch)
	ra.q, ra.qi = ra.q[:0], 0
	var stored uint64
	for n := 0; ra.laOK && n < ra.batch && stored < raMaxBytes; n++ {
		raw, err := ra.la.ValueAndErr()
		if err != nil {
			ra.off = true
			return false
		}
		if len(raw) > 0 && raw[0] == entryHeap {
			if e, err := decodeEntry(raw, it.db.geom); err == nil {
				ra.q = append(ra.q, raValue{key: bytes.Clone(ra.la.Key()), ptr: e.ptr})
				stored += e.ptr.storedLen
			}
		}
		ra.laOK = ra.la.Next()
	}
	if len(ra.q) == 0 {
		return false
	}
	ra.arena = it.db.readBatch(ra.q, ra.arena)
	return true
}

// raExtent is one extent of one value of a batch.
type raExtent struct {
	v   int // index in the batch
	i   int // index of the extent in the value's pointer
	ext alloc.Extent
}

// raRun is one coalesced read.
type raRun struct {
	start, blocks uint64
	buf           []byte
	err           error
}

// readBatch reads the stored bytes of every value in q, in block order
// with nearby extents coalesced, into arena (grown if needed; returned),
// and sets val for each value whose CRC and codec check out.
func (db *DB) readBatch(q []raValue, arena []byte) []byte {
	var exts []raExtent
	for v := range q {
		for i, e := range q[v].ptr.extents {
			exts = append(exts, raExtent{v: v, i: i, ext: e})
		}
	}
	slices.SortFunc(exts, func(a, b raExtent) int {
		switch {
		case a.ext.Start < b.ext.Start:
			return -1
		case a.ext.Start > b.ext.Start:
			return 1
		}
		return 0
	})
	bs := uint64(db.geom.BlockSize)
	gap, maxRun := uint64(raGap)/bs, uint64(raMaxRun)/bs
	var runs []raRun
	runOf := make([]int, len(exts))
	for j, x := range exts {
		end := x.ext.Start + uint64(x.ext.Len)
		if n := len(runs); n > 0 {
			r := &runs[n-1]
			if x.ext.Start >= r.start && x.ext.Start <= r.start+r.blocks+gap && end-r.start <= maxRun {
				r.blocks = max(r.blocks, end-r.start)
				runOf[j] = n - 1
				continue
			}
		}
		runs = append(runs, raRun{start: x.ext.Start, blocks: uint64(x.ext.Len)})
		runOf[j] = len(runs) - 1
	}
	var total uint64
	for i := range runs {
		total += runs[i].blocks * bs
	}
	if uint64(cap(arena)) < total {
		arena = make([]byte, total)
	}
	total = 0
	for i := range runs {
		n := runs[i].blocks * bs
		runs[i].buf = arena[total : total+n : total+n]
		total += n
	}
	read := func(r *raRun) {
		r.err = db.heap.ReadAt(r.buf, r.start)
	}
	if len(runs) < 2 {
		for i := range runs {
			read(&runs[i])
		}
	} else {
		var wg sync.WaitGroup
		next := make(chan int, len(runs))
		for i := range runs {
			next <- i
		}
		close(next)
		for range min(raReaders, runtime.GOMAXPROCS(0), len(runs)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					read(&runs[i])
				}
			}()
		}
		wg.Wait()
	}
	// Assemble each value from its extents' slices of the runs.
	parts := make([][][]byte, len(q))
	for j, x := range exts {
		r := &runs[runOf[j]]
		if r.err != nil {
			continue
		}
		if parts[x.v] == nil {
			parts[x.v] = make([][]byte, len(q[x.v].ptr.extents))
		}
		off := (x.ext.Start - r.start) * bs
		parts[x.v][x.i] = r.buf[off : off+uint64(x.ext.Len)*bs]
	}
	for v := range q {
		p := &q[v].ptr
		ps := parts[v]
		if ps == nil || slices.ContainsFunc(ps, func(b []byte) bool { return b == nil }) {
			continue // a run could not be read: readValue reports it
		}
		var stored []byte
		if len(ps) == 1 {
			stored = ps[0][:p.storedLen:p.storedLen]
		} else {
			stored = make([]byte, 0, p.storedLen)
			for _, b := range ps {
				stored = append(stored, b[:min(uint64(len(b)), p.storedLen-uint64(len(stored)))]...)
			}
		}
		if crcOf(stored) != p.crc {
			continue // readValue reports (or repairs) it
		}
		if p.codec == CodecNone {
			q[v].val = stored
			continue
		}
		if val, err := decodeValue(p.codec, p.rawLen, stored); err == nil {
			q[v].val = val
		}
	}
	return arena
}
