package mirror

import (
	"sync"
	"sync/atomic"

	"github.com/heapkv/heapkv/internal/vfsutil"
)

// Write-back ahead of a flush.
//
// A checkpoint flushes the heap once per CheckpointLogBytes of log (64 MiB
// by default). One fdatasync of that much puts all of it on the device at
// once, and the log's flush of every group committed meanwhile waits behind
// it: with 16 synced writers every write in flight waited the whole 87-96 ms
// that such a flush took (BENCHMARKS.md, "A checkpoint's heap flush, written
// back a region at a time"). WriteBack writes the dirty pages back first,
// a batch of about wbRegionBytes of them at a time on each writable
// replica, waiting for each (sync_file_range: wait for writeback in
// flight, start it, wait for it), so a log flush waits for one batch at
// most; the Sync that follows then has little but the file's metadata and
// the device's cache to flush.
//
// WriteAt notes how many bytes it writes into each region (wbState).
// WriteBack takes the noted regions and works through them in file order in
// batches: a batch is a run of noted regions, each call of sync_file_range
// covering it from its first region to its last, that holds at most
// wbRegionBytes of noted bytes (a region noted fuller than that is a batch
// of its own) and spans at most wbMaxSpan regions. So a log flush still
// waits behind at most about a region's worth of write-back, while values
// scattered over a large heap (updates that reuse free blocks wherever the
// allocator finds them) take one call for many regions instead of one call
// each. In synced YCSB A on a 2.4 GB heap of 4 KiB values a checkpoint
// found 8,177-8,505 regions noted, 18-21 KiB each on average, and wrote them
// back in 623-731 calls instead of as many calls as regions; A ran 1.11x as
// fast (BENCHMARKS.md, "A checkpoint's write-back in batches of written
// bytes"). WriteBack holds syncMu for one batch at a time, so a Sync (a
// group with heap-first values) waits for one batch, not for all of them.
//
// WriteBack is advice: durability still comes from Sync alone. A region a
// write notes while WriteBack swaps the set may be left to Sync; a file
// without a descriptor (MemFS) or a system without sync_file_range skips
// the write-back. But sync_file_range consumes a write-back error: the
// file's next fdatasync would not report it. So WriteBack keeps the first
// error per replica (replica.wbErr) and the next Sync reports it as that
// replica's failed flush, with what follows from that (the replica goes
// stale, or the Sync fails); Detach and a failed resync, which flush a
// replica on their own before it goes stale, count it as a failed flush
// too (its written blocks are marked for the next resync).
//
// Write-back started early. A durable group whose log records do not carry
// its values (heap first) must have them on disk before its log flush. The
// commit leader calls StartWriteBack for each run it writes of such a
// group: sync_file_range with write only, which waits for nothing and
// consumes no error (the fdatasync that follows reports it), so the flush
// finds the pages already on their way.

// wbRegionBytes is the size of a write-back region, which bounds how long
// a log flush waits behind a checkpoint's write-back: about 0.35 ms on the
// disk of BENCHMARKS.md, which flushed about 64 MiB in 87-96 ms. Synced
// loads' p99 grew with the region: 6.2-9.5 ms with 2 MiB, 4.6-5.8 ms with
// 512 KiB, 4.0-4.8 ms with 256 KiB (3.7-4.7 ms before write-back; same
// section); the slowest write and throughput stayed level between them.
const wbRegionBytes = 256 << 10

// writeBackFile and startWriteBackFile are vfsutil.WriteBack and
// vfsutil.StartWriteBack; tests replace them to see the calls and inject
// errors (MemFS files have no descriptor to write back).
var (
	writeBackFile      = vfsutil.WriteBack
	startWriteBackFile = vfsutil.StartWriteBack
)

// wbMaxSpan is how many regions one write-back call may span (16 MiB):
// past it a batch ends even if it holds few noted bytes, so that a call
// does not walk a long stretch of the page cache for a few pages.
const wbMaxSpan = 64

// wbState counts the bytes written into each region since the last
// WriteBack: one counter per region of wbRegionBytes, added to by WriteAt
// with atomic adds and no lock (every heap write notes its regions: a
// mutex here was the one lock all writers shared), and left alone once it
// reaches wbRegionBytes (a full region; most writes into it then only
// load it), taken by WriteBack with an atomic swap per region. A count is
// an upper bound on the region's dirty bytes: a page written twice counts
// twice. The counters grow with the file under mu, which also serialises
// take with growth.
type wbState struct {
	counts atomic.Pointer[[]atomic.Uint32] // counts[r]: bytes noted in region r

	mu sync.Mutex // held to grow counts, and by take
}

// wbRegion is a region WriteBack takes: its index and the bytes noted in
// it.
type wbRegion struct {
	index int64
	bytes uint32
}

// note records that [off, off+n) of the replica files was written.
func (w *wbState) note(off, n int64) {
	for r := off / wbRegionBytes; r <= (off+n-1)/wbRegionBytes; r++ {
		lo, hi := max(off, r*wbRegionBytes), min(off+n, (r+1)*wbRegionBytes)
		w.noteRegion(r, uint32(hi-lo))
	}
}

// noteRegion adds n bytes to region r's count. A note that races with grow
// is not lost: grow publishes the longer array before it adds the old
// one's counts into it, so a note added to the old array after the copy
// is added again to the new one when noteRegion sees the array changed
// under it (a note counted twice only makes the batch it falls in
// smaller).
func (w *wbState) noteRegion(r int64, n uint32) {
	for {
		p := w.counts.Load()
		if p == nil || r >= int64(len(*p)) {
			w.grow(int(r) + 1)
			continue
		}
		if c := &(*p)[r]; c.Load() < wbRegionBytes { // a full region stays full
			c.Add(n)
		}
		if w.counts.Load() == p {
			return
		}
	}
}

// grow makes the counters cover at least n regions.
func (w *wbState) grow(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.counts.Load()
	if old != nil && len(*old) >= n {
		return
	}
	size := max(n, 4096) // the first 1 GiB of file (256 KiB regions)
	if old != nil {
		size = max(n, 2*len(*old))
	}
	counts := make([]atomic.Uint32, size)
	w.counts.Store(&counts)
	if old != nil {
		for i := range *old {
			if c := (*old)[i].Load(); c > 0 {
				counts[i].Add(c)
			}
		}
	}
}

// take returns the noted regions in file order, with their counts, and
// clears them.
func (w *wbState) take() []wbRegion {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.counts.Load()
	if p == nil {
		return nil
	}
	var out []wbRegion
	for i := range *p {
		c := &(*p)[i]
		if c.Load() == 0 {
			continue
		}
		if n := c.Swap(0); n > 0 {
			out = append(out, wbRegion{int64(i), min(n, wbRegionBytes)})
		}
	}
	return out
}

// wbBatch returns how many of regions (noted regions in file order) the
// next write-back call covers: the first, and the ones after it while
// their counts together stay within wbRegionBytes and the call spans at
// most wbMaxSpan regions.
func wbBatch(regions []wbRegion) int {
	n, bytes := 1, regions[0].bytes
	for n < len(regions) && bytes+regions[n].bytes <= wbRegionBytes &&
		regions[n].index-regions[0].index < wbMaxSpan {
		bytes += regions[n].bytes
		n++
	}
	return n
}

// WriteBack writes back, one batch of regions at a time and waiting for
// each, the pages of every writable replica that WriteAt wrote since the
// last WriteBack (see above). Errors are kept for the next Sync to report.
func (s *Set) WriteBack() {
	regions := s.wb.take()
	for len(regions) > 0 {
		n := wbBatch(regions)
		first, last := regions[0].index, regions[n-1].index
		regions = regions[n:]
		if s.closed.Load() {
			return
		}
		s.syncMu.Lock()
		s.mu.RLock() // no replica's file is closed meanwhile
		for _, m := range s.view.Load().writable {
			if m.r.wbErr != nil {
				continue
			}
			if err := writeBackFile(m.f, first*wbRegionBytes, (last-first+1)*wbRegionBytes); err != nil {
				m.r.wbErr = err
			}
		}
		s.mu.RUnlock()
		s.syncMu.Unlock()
	}
}

// StartWriteBack starts writing back blocks [block, block+n) on every
// writable replica and returns without waiting (sync_file_range with
// write only, which leaves write-back errors to the next fdatasync). The
// commit leader calls it for a group whose values must be flushed before
// its log record (heap first), so that the flush finds them on their way.
func (s *Set) StartWriteBack(block uint64, n int) {
	if n <= 0 {
		return
	}
	s.mu.RLock() // no replica's file is closed meanwhile
	for _, m := range s.view.Load().writable {
		startWriteBackFile(m.f, s.offset(block), int64(n)*int64(s.cfg.BlockSize))
	}
	s.mu.RUnlock()
	s.wbStarted.Add(1)
}

// WriteBacksStarted returns how many StartWriteBack calls there were.
func (s *Set) WriteBacksStarted() int64 { return s.wbStarted.Load() }
