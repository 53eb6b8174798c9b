package mirror

import (
	"sync"
	"sync/atomic"
)

// Populating the map. A read through the map of a page the process has not
// touched yet takes a page fault, even when the page is in the page cache:
// the kernel maps it, and 15 pages around it that are cached too (its
// fault-around), on the way back. On the virtual machines this project is
// measured on, such a fault costs 27 µs of CPU, where
// madvise(MADV_POPULATE_READ) maps the same 64 KiB for 7.7 µs in a call of
// its own and for about 2 µs in a call of many MiB (bench/cmd/machinecost;
// BENCHMARKS.md, "The heap's map, populated ahead of reads"). The heap is
// written with pwrite, never through the map, so after a reopen or a load
// none of it is mapped: 1 KB YCSB A on 2.4 million records spent 15% of its
// CPU in these faults.
//
// A populator goroutine per set (Linux only: populate_linux.go) maps pages
// ahead of reads, in steps of populateStep bytes, once reads come:
//
//   - at the first read through a new mapping (made at Open, or for a new
//     first in-sync replica), it maps what the file holds from its start,
//     but only pages that are resident (mincore): a heap larger than
//     memory is not read from disk for it;
//   - after that it follows the writes while reads come: WriteAt raises
//     the high-water mark of what was written, and every populateStep
//     bytes past what is mapped it wakes the goroutine, which maps up to
//     the mark. Those pages were just written, so they are cached; pages
//     of blocks claimed but not yet written (a hole) get a zero-filled
//     page in the page cache, which the write that follows fills.
//
// Mapping pages nothing reads is work for nothing: synced 4 KiB Puts from
// 64 writers spent 5.8% of their CPU in the populator (a CPU profile), and
// nothing read what it mapped (BENCHMARKS.md, "The map populated once it
// is read"). So the populator runs a step only if a read has gone through
// the map since its last one (populator.read, set by the reads of
// mapped.go, cleared by each step), and writes wake it only while that is
// so. When reads resume after more than two steps of writes alone, the
// catch-up maps only the pages still cached: a long stretch of writes may
// have pushed its first pages out of the page cache, and reading them
// back is not a map's business.
//
// Blocks written below the mark into pages that were holes when their range
// was mapped (space punched out by Compact, or never written) are not mapped
// again: their first read faults, as before. Populating is advice: an error
// (an old kernel without MADV_POPULATE_READ, a page past the end of a file
// that shrank, an I/O error under a page) maps less and changes nothing
// else; reads still copy under SetPanicOnFault (mapped.go).
//
// Close stops the goroutine before it unmaps: a step in progress finishes
// first (a step maps at most populateStep bytes).

// populateStep is the most one madvise call maps, and how far writes go past
// the mapped range before the populator is woken.
const populateStep = 16 << 20

// populator is the state of a set's populating goroutine.
type populator struct {
	// read is set by the first read through the map after a step, and
	// cleared by the step (populateLoop). Reads load it on every call, so
	// it has a cache line of its own, away from high, which every write
	// changes.
	_    [64]byte
	read atomic.Bool
	_    [64]byte

	wake chan struct{} // buffered: a pending wake-up
	stop chan struct{} // closed by Close
	done sync.WaitGroup

	high   atomic.Int64 // byte offset past the furthest write (WriteAt)
	mapped atomic.Int64 // byte offset up to which the current mapping was populated
	bytes  atomic.Int64 // bytes mapped by populate calls that succeeded

	m atomic.Pointer[mapping] // the mapping being populated; written by the goroutine only
}

// startPopulator starts s's populator, if the set maps reads and the
// platform can populate a map.
func (s *Set) startPopulator() {
	if !s.cfg.MapReads || !canPopulate {
		return
	}
	p := &populator{wake: make(chan struct{}, 1), stop: make(chan struct{})}
	s.pop = p
	p.done.Add(1)
	go s.populateLoop(p)
	p.kick()
}

// stopPopulator stops s's populator and waits for it.
func (s *Set) stopPopulator() {
	if s.pop != nil {
		close(s.pop.stop)
		s.pop.done.Wait()
	}
}

func (p *populator) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// noteWrite records a write that ended at byte end, and wakes the populator
// when the writes have gone populateStep past what it mapped and the map
// has been read since its last step.
func (p *populator) noteWrite(end int64) {
	for {
		h := p.high.Load()
		if end <= h {
			return
		}
		if p.high.CompareAndSwap(h, end) {
			break
		}
	}
	if end-p.mapped.Load() >= populateStep && p.read.Load() {
		p.kick()
	}
}

// noteRead records a read through mapping m, and wakes the populator if it
// is the first since the populator's last step and m was never populated
// or the writes have gone populateStep past what was.
func (p *populator) noteRead(m *mapping) {
	if p.read.Load() {
		return
	}
	p.read.Store(true)
	if m != p.m.Load() || p.high.Load()-p.mapped.Load() >= populateStep {
		p.kick()
	}
}

// PopulatedBytes returns how many bytes of the map the populator has mapped
// since Open.
func (s *Set) PopulatedBytes() int64 {
	if s.pop == nil {
		return 0
	}
	return s.pop.bytes.Load()
}

func (s *Set) populateLoop(p *populator) {
	defer p.done.Done()
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
		}
		if !p.read.Swap(false) {
			continue // nothing read the map since the last step
		}
		m := s.view.Load().mapped
		if m == nil {
			continue
		}
		if m != p.m.Load() {
			// A new mapping: what its file holds, where it is cached.
			p.mapped.Store(0)
			p.m.Store(m)
			size := m.size()
			if !p.populate(m, 0, size, true) {
				return
			}
			p.mapped.Store(size)
		}
		if h := p.high.Load(); h > p.mapped.Load() {
			from := p.mapped.Load() &^ (pageSize - 1)
			if !p.populate(m, from, h, h-from > 2*populateStep) {
				return
			}
			p.mapped.Store(h)
		}
	}
}

// populate maps the bytes [from, to) of m, populateStep at a time (only
// resident pages if residentOnly), and reports false if the populator was
// stopped meanwhile.
func (p *populator) populate(m *mapping, from, to int64, residentOnly bool) bool {
	to = min(to, int64(len(m.data)))
	for off := from; off < to; off += populateStep {
		select {
		case <-p.stop:
			return false
		default:
		}
		b := m.data[off:min(off+populateStep, to)]
		if residentOnly {
			p.bytes.Add(populateResident(b))
		} else if populateRange(b) == nil {
			p.bytes.Add(int64(len(b)))
		}
	}
	return true
}

// size returns the size of m's file, 0 if it cannot be read.
func (m *mapping) size() int64 {
	fi, err := m.file.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}
