package mirror

import (
	"runtime/debug"

	"github.com/heapkv/heapkv/internal/prefetch"
)

// ViewMapped calls fn with the n bytes at block's start as they lie in the
// mapping of the first in-sync replica: no copy. It reports false without
// calling fn when the set does not map reads (or the range lies outside
// the mapping), and false when the mapping faulted, before fn or while fn
// read the slice; the caller then reads the bytes another way (ReadAt, and
// its repair). Otherwise it reports true and fn's error.
//
// The slice is valid only while fn runs. fn runs with
// runtime/debug.SetPanicOnFault, so that an I/O error of the disk under a
// page it reads is a panic on this goroutine, recovered here; a fault at
// any other address, and any other panic, goes on as it was. The caller
// must keep the blocks from being reused while fn runs, as for any read.
func (s *Set) ViewMapped(block uint64, n int, fn func(b []byte) error) (ok bool, err error) {
	if s.closed.Load() {
		return false, nil
	}
	v := s.view.Load()
	if v.mapped == nil {
		return false, nil
	}
	m := v.mapped
	s.noteMappedRead(m)
	ok, err = m.view(s.mapOffset(block), n, fn)
	if !ok {
		s.mapFaults.Add(1)
	}
	return ok, err
}

// view calls fn with the n bytes at off under SetPanicOnFault, and reports
// false without calling fn if the range is outside the mapping, or if a
// fault inside the mapping interrupted fn.
func (m *mapping) view(off int64, n int, fn func([]byte) error) (ok bool, err error) {
	if !m.spans(off, n) {
		return false, nil
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			m.mustBeFault(r)
			ok, err = false, nil
		}
	}()
	end := off + int64(n)
	return true, fn(m.data[off:end:end])
}

// PrefetchMapped asks the processor to start loading the n bytes at
// block's start in the mapping of the first in-sync replica, and returns
// at once: a scan prefetches the values it will read next, so that their
// waits for memory overlap its work (heapkv's iterator_ahead.go). It does
// nothing when the set does not map reads or the range lies outside the
// mapping. A prefetch never faults, so a page the disk cannot give is
// simply not fetched; the read that follows meets the fault and handles
// it.
func (s *Set) PrefetchMapped(block uint64, n int) {
	if s.closed.Load() {
		return
	}
	m := s.view.Load().mapped
	if m == nil {
		return
	}
	if off := s.mapOffset(block); n > 0 && m.spans(off, n) {
		prefetch.Lines(m.data[off : off+int64(n)])
	}
}
