package mirror

import (
	"math/bits"
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
// one region of wbRegionBytes at a time on each writable replica, waiting
// for each (sync_file_range: wait for writeback in flight, start it, wait
// for it), so a log flush waits for one region at most; the Sync that
// follows then has little but the file's metadata and the device's cache to
// flush.
//
// WriteAt notes the regions it writes (wbState). WriteBack takes the noted
// set and works through it in file order, holding syncMu for one region at
// a time, so a Sync (a group with heap-first values) waits for one region,
// not for all of them.
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

// wbState is the set of regions written since the last WriteBack: one bit
// per region of wbRegionBytes, set by WriteAt with an atomic Or and no
// lock (every heap write notes its regions: a mutex here was the one lock
// all writers shared), taken by WriteBack word by word with an atomic
// swap. The bitmap grows with the file under mu, which also serialises
// take with growth.
type wbState struct {
	words atomic.Pointer[[]atomic.Uint64] // bit r%64 of word r/64: region r was written

	mu sync.Mutex // held to grow words, and by take
}

// note records that [off, off+n) of the replica files was written.
func (w *wbState) note(off, n int64) {
	for r := off / wbRegionBytes; r <= (off+n-1)/wbRegionBytes; r++ {
		w.noteRegion(r)
	}
}

// noteRegion sets region r's bit. A note that races with grow is not lost:
// grow publishes the longer bitmap before it copies the old one's bits,
// so a bit set in the old bitmap after the copy is set again in the new
// one when noteRegion sees the bitmap changed under it.
func (w *wbState) noteRegion(r int64) {
	i, bit := int(r/64), uint64(1)<<(r%64)
	for {
		p := w.words.Load()
		if p == nil || i >= len(*p) {
			w.grow(i + 1)
			continue
		}
		if word := &(*p)[i]; word.Load()&bit == 0 { // most writes find it set
			word.Or(bit)
		}
		if w.words.Load() == p {
			return
		}
	}
}

// grow makes the bitmap at least n words long.
func (w *wbState) grow(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.words.Load()
	if old != nil && len(*old) >= n {
		return
	}
	size := max(n, 64) // 64 words: the first 1 GiB of file (256 KiB regions)
	if old != nil {
		size = max(n, 2*len(*old))
	}
	words := make([]atomic.Uint64, size)
	w.words.Store(&words)
	if old != nil {
		for i := range *old {
			words[i].Or((*old)[i].Load())
		}
	}
}

// take returns the noted regions in file order and clears them.
func (w *wbState) take() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.words.Load()
	if p == nil {
		return nil
	}
	var out []int64
	for i := range *p {
		word := &(*p)[i]
		if word.Load() == 0 {
			continue
		}
		for set := word.Swap(0); set != 0; set &= set - 1 {
			out = append(out, int64(i)*64+int64(bits.TrailingZeros64(set)))
		}
	}
	return out
}

// WriteBack writes back, one region at a time and waiting for each, the
// pages of every writable replica that WriteAt wrote since the last
// WriteBack (see above). Errors are kept for the next Sync to report.
func (s *Set) WriteBack() {
	regions := s.wb.take()
	for _, r := range regions {
		if s.closed.Load() {
			return
		}
		s.syncMu.Lock()
		s.mu.RLock() // no replica's file is closed meanwhile
		for _, m := range s.view.Load().writable {
			if m.r.wbErr != nil {
				continue
			}
			if err := writeBackFile(m.f, r*wbRegionBytes, wbRegionBytes); err != nil {
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
