package alloc

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/heapkv/heapkv/internal/bitmap"
)

// Snapshot is a copy of every segment bitmap of an Allocator, without its
// unpublished claims. It is not safe for concurrent use.
type Snapshot struct {
	g    Geometry
	segs []*bitmap.Bitmap
}

// Snapshot returns a consistent copy of the allocation state that leaves out
// every unpublished claim: a claim's bits and its registration in the
// unpublished set change together under its cursor's mutex, and Snapshot
// holds all of them while it copies. Allocate, Publish and Abort wait
// meanwhile; the copy is one bit per block (32 MiB per TiB of 4 KiB blocks).
// Frees racing with Snapshot may or may not be reflected.
func (a *Allocator) Snapshot() *Snapshot {
	for i := range a.cursors {
		a.cursors[i].mu.Lock()
	}
	defer func() {
		for i := range a.cursors {
			a.cursors[i].mu.Unlock()
		}
	}()
	segs := *a.segs.Load()
	s := &Snapshot{g: a.g, segs: make([]*bitmap.Bitmap, len(segs))}
	for i, seg := range segs {
		s.segs[i] = seg.bits.Clone()
	}
	for i := range a.cursors {
		a.cursors[i].unpub.forEach(func(exts []Extent) {
			for _, e := range exts {
				s.Clear(e)
			}
		})
	}
	return s
}

// Geometry returns the geometry of the snapshotted heap.
func (s *Snapshot) Geometry() Geometry { return s.g }

// Segments returns the heap size in segments.
func (s *Snapshot) Segments() int { return len(s.segs) }

// Clear marks the blocks of e free in the snapshot (not in the Allocator):
// the caller uses it to drop frees that are logged but still pending. It
// panics if e is not inside one segment of the snapshotted heap.
func (s *Snapshot) Clear(e Extent) {
	if err := s.checkExtent(e); err != nil {
		panic(fmt.Sprintf("alloc: Snapshot.Clear: %v", err))
	}
	si, off := s.g.locate(e)
	s.segs[si].ClearRange(off, int(e.Len))
}

func (s *Snapshot) checkExtent(e Extent) error {
	if err := s.g.CheckExtent(e); err != nil {
		return err
	}
	if si, _ := s.g.locate(e); si >= uint64(len(s.segs)) {
		return fmt.Errorf("%w: extent %v lies beyond the heap (%d segments)", ErrCorrupt, e, len(s.segs))
	}
	return nil
}

// IsAllocated reports whether every block of e is allocated in the snapshot;
// false if e is not a valid extent of the snapshotted heap.
func (s *Snapshot) IsAllocated(e Extent) bool {
	if s.checkExtent(e) != nil {
		return false
	}
	si, off := s.g.locate(e)
	return s.segs[si].AllSet(off, int(e.Len))
}

// AllocatedBlocks returns the number of allocated blocks in the snapshot.
func (s *Snapshot) AllocatedBlocks() int64 {
	var n int64
	for _, b := range s.segs {
		n += int64(b.Count())
	}
	return n
}

// ForEachAllocated calls fn for each maximal run of allocated blocks within a
// segment, in block order, until fn returns false.
func (s *Snapshot) ForEachAllocated(fn func(Extent) bool) { forEachRun(s.g, s.segs, fn) }

// Restore returns an Allocator whose heap is a copy of s, with no cursor
// owning a segment. s stays usable.
func Restore(s *Snapshot, cfg Config) (*Allocator, error) {
	a, err := New(s.g, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.MaxSegments > 0 && len(s.segs) > cfg.MaxSegments {
		return nil, fmt.Errorf("%w: restore: snapshot has %d segments, more than the maximum %d",
			ErrInvalid, len(s.segs), cfg.MaxSegments)
	}
	segs := make([]*segment, len(s.segs))
	for i, b := range s.segs {
		segs[i] = newSegment(b.Clone())
	}
	a.segs.Store(&segs)
	return a, nil
}

// Snapshot encoding. Wire format (never change; add a new version instead),
// all integers little-endian:
//
//	+-------+---------+------------+----------------+----------+-----------------+--------+
//	| magic | version | block size | segment blocks | segments | bitmap words    | CRC    |
//	| 4 B   | 4 B     | 4 B        | 4 B            | 8 B      | 8 B each, W     | 4 B    |
//	+-------+---------+------------+----------------+----------+-----------------+--------+
//	0       4         8            12               16         24                24+8W
//
// magic is "HKAB" (heapkv allocation bitmaps); version is 1. The words are
// the segment bitmaps one after another, segment 0 first, SegmentBlocks/64
// words per segment, so W = segments * SegmentBlocks/64; block b of a segment
// is bit b%64 of its word b/64, and a set bit is an allocated block. The CRC
// is CRC-32C (Castagnoli) over every byte before it. In a heapkv database the
// encoding follows the file header of an alloc-<lsn> file.
const (
	snapMagic       = "HKAB"
	snapVersion     = 1
	offVersion      = 4
	offBlockSize    = 8
	offSegmentBlks  = 12
	offSegments     = 16
	offWords        = 24
	snapTrailerSize = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes s in the layout described above. It never fails.
func (s *Snapshot) MarshalBinary() ([]byte, error) {
	wps := s.g.SegmentBlocks / 64
	b := make([]byte, offWords, offWords+8*wps*len(s.segs)+snapTrailerSize)
	copy(b, snapMagic)
	binary.LittleEndian.PutUint32(b[offVersion:], snapVersion)
	binary.LittleEndian.PutUint32(b[offBlockSize:], uint32(s.g.BlockSize))
	binary.LittleEndian.PutUint32(b[offSegmentBlks:], uint32(s.g.SegmentBlocks))
	binary.LittleEndian.PutUint64(b[offSegments:], uint64(len(s.segs)))
	for _, bm := range s.segs {
		for w := range wps {
			b = binary.LittleEndian.AppendUint64(b, bm.Word(w))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// UnmarshalSnapshot decodes an encoding made by MarshalBinary. Any defect
// (truncation, a bad checksum, magic, version or geometry, a length that does
// not match the segment count) is an error wrapping ErrCorrupt that says what
// is wrong and where. It never panics, and it allocates memory in proportion
// to len(b) only.
func UnmarshalSnapshot(b []byte) (*Snapshot, error) {
	if len(b) < offWords+snapTrailerSize {
		return nil, fmt.Errorf("%w: snapshot: %d bytes, shorter than the %d-byte header and trailer",
			ErrCorrupt, len(b), offWords+snapTrailerSize)
	}
	if string(b[:offVersion]) != snapMagic {
		return nil, fmt.Errorf("%w: snapshot: bad magic %q at offset 0, want %q", ErrCorrupt, b[:offVersion], snapMagic)
	}
	body := b[:len(b)-snapTrailerSize]
	if got, want := binary.LittleEndian.Uint32(b[len(body):]), crc32.Checksum(body, castagnoli); got != want {
		return nil, fmt.Errorf("%w: snapshot: checksum %08x at offset %d, computed %08x over %d bytes",
			ErrCorrupt, got, len(body), want, len(body))
	}
	if v := binary.LittleEndian.Uint32(b[offVersion:]); v != snapVersion {
		return nil, fmt.Errorf("%w: snapshot: unknown version %d at offset %d (this build reads %d)",
			ErrCorrupt, v, offVersion, snapVersion)
	}
	bs := binary.LittleEndian.Uint32(b[offBlockSize:])
	sb := binary.LittleEndian.Uint32(b[offSegmentBlks:])
	if bs > MaxBlockSize || sb > MaxSegmentBlocks {
		return nil, fmt.Errorf("%w: snapshot: block size %d or segment blocks %d out of range", ErrCorrupt, bs, sb)
	}
	g := Geometry{BlockSize: int(bs), SegmentBlocks: int(sb)}
	if err := g.Validate(); err != nil {
		// %v: Validate's ErrInvalid (a caller's bad argument) does not
		// apply to a damaged snapshot.
		return nil, fmt.Errorf("%w: snapshot: geometry at offset %d: %v", ErrCorrupt, offBlockSize, err)
	}
	nseg := binary.LittleEndian.Uint64(b[offSegments:])
	wps := uint64(sb / 64)
	words := b[offWords:len(body)]
	if len(words)%8 != 0 || nseg > uint64(len(words))/8/wps || nseg*wps*8 != uint64(len(words)) {
		return nil, fmt.Errorf("%w: snapshot: %d segments of %d blocks need %d bytes of bitmap at offset %d, have %d",
			ErrCorrupt, nseg, sb, satMul(satMul(nseg, wps), 8), offWords, len(words))
	}
	s := &Snapshot{g: g, segs: make([]*bitmap.Bitmap, nseg)}
	ws := make([]uint64, wps)
	for i := range s.segs {
		for w := range ws {
			ws[w] = binary.LittleEndian.Uint64(words[8*(uint64(i)*wps+uint64(w)):])
		}
		bm, err := bitmap.FromWords(g.SegmentBlocks, ws)
		if err != nil { // impossible: SegmentBlocks is a multiple of 64
			return nil, fmt.Errorf("%w: snapshot: segment %d: %v", ErrCorrupt, i, err)
		}
		s.segs[i] = bm
	}
	return s, nil
}

// satMul returns a*b, or the largest uint64 if that overflows.
func satMul(a, b uint64) uint64 {
	if a != 0 && b > ^uint64(0)/a {
		return ^uint64(0)
	}
	return a * b
}
