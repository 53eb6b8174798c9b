package alloc

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/heapkv/heapkv/internal/base"
)

// ErrCorrupt is carried (errors.Is) by every error that reports inconsistent
// allocation state: a recovery step that contradicts the bitmaps, an extent
// that does not fit the geometry, or a snapshot encoding that fails to decode.
// It is marked with base.MarkCorrupt, so those errors also satisfy
// errors.Is(err, base.ErrCorrupt).
var ErrCorrupt = base.MarkCorrupt(errors.New("alloc: corrupt allocation state"))

// ErrInvalid is returned (wrapped) for invalid arguments: a bad Geometry or
// Config, or an Allocate of fewer than one block.
var ErrInvalid = errors.New("alloc: invalid argument")

// Limits of a Geometry.
const (
	MinBlockSize     = 128
	MaxBlockSize     = 1 << 20
	MaxSegmentBlocks = 1 << 24
)

// Geometry is the shape of a heap: the block size and the number of blocks
// in a segment. It is fixed when the database is created (the MANIFEST
// records it) and never changes.
type Geometry struct {
	BlockSize     int // bytes per block; a power of two in [MinBlockSize, MaxBlockSize]
	SegmentBlocks int // blocks per segment; a multiple of 64 in [64, MaxSegmentBlocks]
}

// Validate returns an error wrapping ErrInvalid that names every field of g
// that is out of range, or nil.
func (g Geometry) Validate() error {
	var errs []error
	if g.BlockSize < MinBlockSize || g.BlockSize > MaxBlockSize || bits.OnesCount(uint(g.BlockSize)) != 1 {
		errs = append(errs, fmt.Errorf("%w: block size %d: want a power of two in [%d, %d]",
			ErrInvalid, g.BlockSize, MinBlockSize, MaxBlockSize))
	}
	if g.SegmentBlocks < 64 || g.SegmentBlocks > MaxSegmentBlocks || g.SegmentBlocks%64 != 0 {
		errs = append(errs, fmt.Errorf("%w: segment blocks %d: want a multiple of 64 in [64, %d]",
			ErrInvalid, g.SegmentBlocks, MaxSegmentBlocks))
	}
	return errors.Join(errs...)
}

// SegmentBytes returns the size of one segment in bytes.
func (g Geometry) SegmentBytes() int64 { return int64(g.BlockSize) * int64(g.SegmentBlocks) }

// BlocksFor returns the number of blocks that hold nbytes bytes,
// ceil(nbytes/BlockSize); 0 for nbytes <= 0.
func (g Geometry) BlocksFor(nbytes int64) int {
	if nbytes <= 0 {
		return 0
	}
	return int((nbytes-1)/int64(g.BlockSize) + 1)
}

// CheckExtent returns an error wrapping ErrCorrupt unless e is a non-empty
// extent that lies inside one segment. It does not know how many segments a
// heap has; Allocator.CheckExtent does.
func (g Geometry) CheckExtent(e Extent) error {
	if e.Len == 0 {
		return fmt.Errorf("%w: extent %v is empty", ErrCorrupt, e)
	}
	s := uint64(g.SegmentBlocks)
	if e.Start/s != (e.End()-1)/s || e.End() < e.Start {
		return fmt.Errorf("%w: extent %v crosses a segment boundary (segments of %d blocks)", ErrCorrupt, e, s)
	}
	return nil
}

// locate splits a checked extent into its segment number and the offset of
// its first block within the segment.
func (g Geometry) locate(e Extent) (seg uint64, off int) {
	s := uint64(g.SegmentBlocks)
	return e.Start / s, int(e.Start % s)
}

// Extent is a run of blocks inside one segment. Start is the global block
// number: segment s holds blocks [s*SegmentBlocks, (s+1)*SegmentBlocks).
type Extent struct {
	Start uint64 // first block
	Len   uint32 // number of blocks
}

// End returns the block just past e, Start+Len.
func (e Extent) End() uint64 { return e.Start + uint64(e.Len) }

// String formats e as "[start+len]", e.g. "[1024+3]".
func (e Extent) String() string { return fmt.Sprintf("[%d+%d]", e.Start, e.Len) }
