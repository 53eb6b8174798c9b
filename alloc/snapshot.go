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
// meanwhile; the copy is one bit per block (1 GiB per TiB of 128-byte blocks,
// 32 MiB per TiB of 4 KiB blocks).
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

// Snapshot encoding. Wire format (never change a version; add a new one
// instead), all integers little-endian:
//
//	+-------+---------+------------+----------------+----------+--------+--------+
//	| magic | version | block size | segment blocks | segments | words  | CRC    |
//	| 4 B   | 4 B     | 4 B        | 4 B            | 8 B      |        | 4 B    |
//	+-------+---------+------------+----------------+----------+--------+--------+
//	0       4         8            12               16         24
//
// magic is "HKAB" (heapkv allocation bitmaps). The words are the segment
// bitmaps one after another, segment 0 first, W = SegmentBlocks/64 words per
// segment; block b of a segment is bit b%64 of its word b/64, and a set bit
// is an allocated block. The CRC is CRC-32C (Castagnoli) over every byte
// before it. In a heapkv database the encoding follows the file header of
// an alloc-<lsn> file.
//
// Version 1 stores the words raw: 8*W bytes per segment.
//
// Version 2 (written since heap blocks of 128 bytes made bitmaps 32 times
// longer) stores each segment's words as runs, none crossing a segment:
//
//	run: | n<<2 | kind  uvarint | kind 2 only: n words, 8 B each |
//
// kind 0 is n zero words (free blocks), kind 1 n all-ones words (allocated
// blocks), kind 2 n words given literally; kind 3 is invalid, n >= 1, and
// each segment's runs add up to exactly W words. MarshalBinary makes the
// runs maximal, so a full or empty segment costs one run of two or three
// bytes.
const (
	snapMagic       = "HKAB"
	snapVersionRaw  = 1
	snapVersionRuns = 2
	offVersion      = 4
	offBlockSize    = 8
	offSegmentBlks  = 12
	offSegments     = 16
	offWords        = 24
	snapTrailerSize = 4
)

// Run kinds of a version 2 encoding.
const (
	runZeros = iota
	runOnes
	runLiteral
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes s in the layout described above (version 2). It
// never fails.
func (s *Snapshot) MarshalBinary() ([]byte, error) {
	b := make([]byte, offWords, offWords+64*len(s.segs)+snapTrailerSize)
	copy(b, snapMagic)
	binary.LittleEndian.PutUint32(b[offVersion:], snapVersionRuns)
	binary.LittleEndian.PutUint32(b[offBlockSize:], uint32(s.g.BlockSize))
	binary.LittleEndian.PutUint32(b[offSegmentBlks:], uint32(s.g.SegmentBlocks))
	binary.LittleEndian.PutUint64(b[offSegments:], uint64(len(s.segs)))
	wps := s.g.SegmentBlocks / 64
	for _, bm := range s.segs {
		for w := 0; w < wps; {
			kind := wordKind(bm.Word(w))
			n := 1
			for w+n < wps && wordKind(bm.Word(w+n)) == kind {
				n++
			}
			b = binary.AppendUvarint(b, uint64(n)<<2|uint64(kind))
			if kind == runLiteral {
				for i := range n {
					b = binary.LittleEndian.AppendUint64(b, bm.Word(w+i))
				}
			}
			w += n
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

func wordKind(w uint64) int {
	switch w {
	case 0:
		return runZeros
	case ^uint64(0):
		return runOnes
	}
	return runLiteral
}

// UnmarshalSnapshot decodes an encoding made by MarshalBinary, of either
// version. Any defect (truncation, a bad checksum, magic, version or
// geometry, runs or a length that do not match the segment count) is an
// error wrapping ErrCorrupt that says what is wrong and where. It never
// panics, and it allocates memory in proportion to len(b) only: at most
// SegmentBlocks/8 bytes of bitmap per byte of b (every segment costs at
// least one byte).
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
	version := binary.LittleEndian.Uint32(b[offVersion:])
	if version != snapVersionRaw && version != snapVersionRuns {
		return nil, fmt.Errorf("%w: snapshot: unknown version %d at offset %d (this build reads %d and %d)",
			ErrCorrupt, version, offVersion, snapVersionRaw, snapVersionRuns)
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
	words := body[offWords:]
	if version == snapVersionRaw {
		return decodeRawWords(g, nseg, words)
	}
	return decodeRuns(g, nseg, words)
}

// decodeRawWords decodes version 1's words.
func decodeRawWords(g Geometry, nseg uint64, words []byte) (*Snapshot, error) {
	wps := uint64(g.SegmentBlocks / 64)
	if len(words)%8 != 0 || nseg > uint64(len(words))/8/wps || nseg*wps*8 != uint64(len(words)) {
		return nil, fmt.Errorf("%w: snapshot: %d segments of %d blocks need %d bytes of bitmap at offset %d, have %d",
			ErrCorrupt, nseg, g.SegmentBlocks, satMul(satMul(nseg, wps), 8), offWords, len(words))
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

// decodeRuns decodes version 2's runs.
func decodeRuns(g Geometry, nseg uint64, runs []byte) (*Snapshot, error) {
	if nseg > uint64(len(runs)) {
		return nil, fmt.Errorf("%w: snapshot: %d segments in %d bytes of runs at offset %d (each takes at least one)",
			ErrCorrupt, nseg, len(runs), offWords)
	}
	wps := g.SegmentBlocks / 64
	s := &Snapshot{g: g, segs: make([]*bitmap.Bitmap, nseg)}
	ws := make([]uint64, wps)
	off := 0
	bad := func(seg uint64, format string, a ...any) error {
		return fmt.Errorf("%w: snapshot: segment %d, run at offset %d: %s", ErrCorrupt, seg, offWords+off, fmt.Sprintf(format, a...))
	}
	for i := range s.segs {
		for w := 0; w < wps; {
			tok, k := binary.Uvarint(runs[off:])
			if k <= 0 {
				return nil, bad(uint64(i), "truncated or overlong run header")
			}
			n, kind := tok>>2, tok&3
			if n == 0 || n > uint64(wps-w) || kind > runLiteral {
				return nil, bad(uint64(i), "run of %d words of kind %d where %d words of the segment are left", n, kind, wps-w)
			}
			off += k
			switch kind {
			case runZeros, runOnes:
				fill := uint64(0)
				if kind == runOnes {
					fill = ^uint64(0)
				}
				for j := range int(n) {
					ws[w+j] = fill
				}
			case runLiteral:
				if uint64(len(runs)-off) < 8*n {
					return nil, bad(uint64(i), "%d literal words, %d bytes left", n, len(runs)-off)
				}
				for j := range int(n) {
					ws[w+j] = binary.LittleEndian.Uint64(runs[off:])
					off += 8
				}
			}
			w += int(n)
		}
		bm, err := bitmap.FromWords(g.SegmentBlocks, ws)
		if err != nil { // impossible: SegmentBlocks is a multiple of 64
			return nil, bad(uint64(i), "%v", err)
		}
		s.segs[i] = bm
	}
	if off != len(runs) {
		return nil, fmt.Errorf("%w: snapshot: %d bytes after the last segment's runs at offset %d", ErrCorrupt, len(runs)-off, offWords+off)
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
