package mirror

import (
	"runtime/debug"
	"slices"
	"unsafe"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Mapped reads. With Config.MapReads, the set maps the file of the first
// in-sync replica (the one ReadAt reads) into memory, read-only and shared,
// and ReadMapped copies blocks out of the mapping: no system call, and the
// page cache is the only copy in memory. The mapping reserves mapReserve
// bytes of address space from the file's start, far beyond its end, so that
// the device grows under it without a remap: a page past the end of the
// file faults (SIGBUS) rather than reading zeros.
//
// A fault on the mapping, whether past the end of a file that shrank or an
// I/O error of the disk under the page, must not crash the process: the
// copy runs with runtime/debug.SetPanicOnFault, which turns the fault into
// a panic on the reading goroutine; copyOut recovers it and ReadMapped
// falls back to ReadAt's pread, whose error then takes the ordinary way
// (the caller's read repair from another replica).
//
// A mapping belongs to one open file of one replica (replica.mapped). When
// the first in-sync replica changes, or its file is reopened, the view
// names another mapping and the old one is retired; retired mappings stay
// mapped until Close, since a read that loaded the old view may still be
// copying from it (state changes are rare: a few mappings at most).

// mapReserve is the address space a mapping reserves: 1 TiB on 64-bit
// platforms (blocks beyond it are read with pread), none on 32-bit ones,
// which do not map.
const mapReserve = int(^uint(0)>>63) << 40

// mapping is one replica file mapped into memory.
type mapping struct {
	data []byte
	file vfs.File // the open file it maps
}

// mapFor returns r's mapping of its open file, making it if r has none or
// one of another file (retiring that one); nil if r's file cannot be
// mapped. REQUIRES: s.mu held exclusively.
func (s *Set) mapFor(r *replica) *mapping {
	if m := r.mapped; m != nil && m.file == r.f {
		return m
	}
	if r.mapped != nil {
		s.retired = append(s.retired, r.mapped)
		r.mapped = nil
	}
	fd := r.f.Fd()
	if fd == vfs.InvalidFd || mapReserve == 0 {
		return nil
	}
	data, err := mmapFile(fd, mapReserve)
	if err != nil {
		s.cfg.Logger.Warn("mirror: cannot map replica for reads; reading with pread", "replica", r.path, "err", err)
		return nil
	}
	r.mapped = &mapping{data: data, file: r.f}
	return r.mapped
}

// unmapAll unmaps every mapping. REQUIRES: s.mu held exclusively, and no
// read running (Close).
func (s *Set) unmapAll() {
	for _, r := range s.replicas {
		if r.mapped != nil {
			s.retired = append(s.retired, r.mapped)
			r.mapped = nil
		}
	}
	for _, m := range s.retired {
		_ = munmapFile(m.data)
	}
	s.retired = nil
}

// mapOffset is block's offset in a mapping, or -1 for a block beyond any
// mapping's reach (whose offset could wrap around int64).
func (s *Set) mapOffset(block uint64) int64 {
	if block >= uint64(mapReserve)/uint64(s.cfg.BlockSize) {
		return -1
	}
	return s.offset(block)
}

// mustBeFault re-raises r, a panic recovered while reading the mapping
// under SetPanicOnFault, unless it is a fault at an address inside the
// mapping (an I/O error under a page, or a page past the end of a file
// that shrank).
func (m *mapping) mustBeFault(r any) {
	if f, fault := r.(interface{ Addr() uintptr }); !fault || !m.holds(f.Addr()) {
		panic(r)
	}
}

// holds reports whether addr lies inside the mapping.
func (m *mapping) holds(addr uintptr) bool {
	base := uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))
	return addr >= base && addr-base < uintptr(len(m.data))
}

// spans reports whether the n bytes at off lie inside the mapping (n >= 0).
func (m *mapping) spans(off int64, n int) bool {
	return off >= 0 && n >= 0 && off <= int64(len(m.data))-int64(n)
}

// copyOut copies len(p) bytes at off out of the mapping and reports
// whether it could: false if the range is outside the reservation or the
// copy faulted.
func (m *mapping) copyOut(p []byte, off int64) (ok bool) {
	if !m.spans(off, len(p)) {
		return false
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			m.mustBeFault(r)
			ok = false
		}
	}()
	copy(p, m.data[off:])
	return true
}

// appendOut appends n bytes at off out of the mapping to dst and reports
// whether it could (dst unchanged if not). Appending to a slice without room
// allocates one the runtime does not zero before the copy fills it: a
// fresh value costs one pass over its bytes, not two.
func (m *mapping) appendOut(dst []byte, off int64, n int) (out []byte, ok bool) {
	if !m.spans(off, n) {
		return dst, false
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			m.mustBeFault(r)
			out, ok = dst, false
		}
	}()
	return append(dst, m.data[off:off+int64(n)]...), true
}

// AppendMapped appends the n bytes at block's start to dst, as ReadMapped
// reads them: through the mapping of the first in-sync replica if it can,
// else with ReadAt. On error dst is returned unchanged.
func (s *Set) AppendMapped(dst []byte, block uint64, n int) ([]byte, error) {
	if s.closed.Load() {
		return dst, ErrClosed
	}
	v := s.view.Load()
	if v.mapped != nil {
		s.noteMappedRead(v.mapped)
		if out, ok := v.mapped.appendOut(dst, s.mapOffset(block), n); ok {
			return out, nil
		}
		s.mapFaults.Add(1)
	}
	out := slices.Grow(dst, n)[:len(dst)+n]
	if err := s.ReadAt(out[len(dst):], block); err != nil {
		return dst, err
	}
	return out, nil
}

// ReadMapped is ReadAt through the mapping of the first in-sync replica,
// when the set maps reads (Config.MapReads) and the copy does not fault;
// otherwise it is ReadAt.
func (s *Set) ReadMapped(p []byte, block uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	v := s.view.Load()
	if v.mapped == nil {
		return s.ReadAt(p, block)
	}
	s.noteMappedRead(v.mapped)
	if v.mapped.copyOut(p, s.mapOffset(block)) {
		return nil
	}
	s.mapFaults.Add(1)
	return s.ReadAt(p, block)
}

// noteMappedRead tells the populator, if any, of a read through m.
func (s *Set) noteMappedRead(m *mapping) {
	if s.pop != nil {
		s.pop.noteRead(m)
	}
}

// Mapped reports whether ReadMapped reads through a mapping now.
func (s *Set) Mapped() bool { return s.view.Load().mapped != nil }

// MapFaults returns how many ReadMapped calls faulted on the mapping and
// fell back to pread.
func (s *Set) MapFaults() int64 { return s.mapFaults.Load() }
