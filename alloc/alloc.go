package alloc

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/heapkv/heapkv/internal/bitmap"
)

// ErrFull is returned (wrapped) by Allocate when satisfying the request would
// grow the heap beyond Config.MaxSegments.
var ErrFull = errors.New("alloc: heap is full")

// Config tunes an Allocator. The zero value gives the defaults.
type Config struct {
	// Cursors is the number of allocation cursors, i.e. how many writers can
	// allocate at once without waiting for each other. Each cursor owns at
	// most one segment. Default (0): 2*GOMAXPROCS. AllocateFresh has one
	// more cursor of its own (fresh.go).
	Cursors int
	// MaxSegments caps the heap size in segments. Allocate returns ErrFull
	// rather than grow past it; MarkAllocated reports an extent past it as
	// ErrCorrupt, which bounds the memory a corrupt log record can make
	// recovery spend. Default (0): no limit, on either.
	MaxSegments int
}

func (c Config) withDefaults() (Config, error) {
	if c.Cursors < 0 || c.MaxSegments < 0 {
		return c, fmt.Errorf("%w: config: negative cursors (%d) or max segments (%d)",
			ErrInvalid, c.Cursors, c.MaxSegments)
	}
	if c.Cursors == 0 {
		c.Cursors = 2 * runtime.GOMAXPROCS(0)
	}
	return c, nil
}

// segment is the allocation state of one segment of the heap.
type segment struct {
	bits *bitmap.Bitmap
	// free counts the segment's clear bits. It never exceeds the true count:
	// the owner decrements it before it sets bits, and Free increments it
	// after it clears them. So an owner that reads free >= n (holding its
	// cursor) is sure to find n clear bits.
	free atomic.Int64
	// owner is the index of the cursor that owns the segment, unowned or
	// heldOwner (reclaim.go). Guarded by Allocator.poolMu.
	owner int
	// punched marks a segment given back to the file system (reclaim.go).
	// Guarded by Allocator.poolMu.
	punched bool
	// gen is bumped, under freedMu, after every change of bits that the
	// list of free runs does not see: all but the owner's own takes
	// (freeruns.go). The list is current while its gen equals this.
	gen atomic.Uint64
	// longest is a hint for trades (trade): the length of a free run the
	// segment is known to have. Its last owner sets it when it gives the
	// segment up (releaseLocked: the longest run it lists), and every free
	// raises it to the extent it frees (raiseLongest: a run at least that
	// long is free now); -1: none known (a new segment, or recovery marked
	// blocks of it). While no cursor owns the segment only frees change
	// its bits, and they only lengthen runs, so the hint holds; a free that
	// raises it just as an owner gives up a segment after claiming from the
	// run may leave it too high, and the claim that trades for it then
	// finds no run and goes on as if it had taken any other segment.
	longest atomic.Int32
	// runs lists the segment's free runs for the cursor that owns it
	// (freeruns.go). Guarded by that cursor's mu.
	runs freeRuns
	// freedMu guards freed and stale, and is held by everyone but the
	// owner while they change bits, so that the owner sees each change
	// whole (freeruns.go).
	freedMu sync.Mutex
	freed   []freeRun // runs freed by others since the owner last merged them
	stale   bool      // runs must be built again from the bitmap
}

// raiseLongest raises s.longest to n if it is lower.
func (s *segment) raiseLongest(n int32) {
	for {
		l := s.longest.Load()
		if l >= n || s.longest.CompareAndSwap(l, n) {
			return
		}
	}
}

// cursor is one allocation context: a writer holds it for the duration of
// one Allocate.
type cursor struct {
	// mu guards the fields below, the bits this cursor sets in its segment,
	// and (with the clearing of an aborted claim's bits) the cursor's
	// unpublished claims. Snapshot holds every cursor's mu.
	mu sync.Mutex
	// seg is the index of the segment this cursor owns, or -1. Written with
	// both mu and Allocator.poolMu held.
	seg int
	// hint is the block after the cursor's last claim in seg, where the
	// next claim goes if it fits there (fitRun).
	hint int
	// unpub holds this cursor's claims until Publish or Abort.
	unpub unpubSet
	_     [64]byte // keep cursors on different cache lines
}

// Allocator hands out extents of a heap. It is safe for concurrent use,
// except for MarkAllocated and MarkFree (see there).
type Allocator struct {
	g       Geometry
	cfg     Config
	cursors []cursor
	// minPiece is the shortest run a scattered claim takes a piece from
	// (minPieceBytes in blocks, at least 1).
	minPiece int
	// segs is the segment table. It is only appended to (under poolMu, by
	// storing a longer slice) and read without a lock by everyone.
	segs atomic.Pointer[[]*segment]

	// poolMu guards segment ownership (segment.owner and each cursor's seg),
	// the choice of a segment to trade for, and growing segs. It is taken
	// only when a cursor trades its segment: the rare path.
	poolMu sync.Mutex

	trades, grows, shrinks, doubleFrees atomic.Int64
	punchedCount                        atomic.Int64 // segments marked punched
	preferLow                           atomic.Bool  // SetPreferLow (reclaim.go)
}

// New returns an Allocator for an empty heap (zero segments) of geometry g.
func New(g Geometry, cfg Config) (*Allocator, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	a := &Allocator{g: g, cfg: cfg, cursors: make([]cursor, cfg.Cursors+1), minPiece: max(1, minPieceBytes/g.BlockSize)}
	for i := range a.cursors {
		a.cursors[i].seg = -1
	}
	a.segs.Store(new([]*segment))
	return a, nil
}

// Geometry returns the heap's geometry.
func (a *Allocator) Geometry() Geometry { return a.g }

// Segments returns the current heap size in segments.
func (a *Allocator) Segments() int { return len(*a.segs.Load()) }

// Claim is the result of Allocate: extents that together hold the requested
// number of blocks, in order, each inside one segment. The claim is
// unpublished (left out of snapshots) until Publish or Abort. The caller must
// not modify Extents.
type Claim struct {
	Extents []Extent
	cur     int32  // cursor index + 1; 0 for the zero Claim
	slot    int32  // slot in the cursor's unpublished set
	seq     uint64 // sequence number in the cursor's unpublished set
}

// Blocks returns the total number of blocks in c.
func (c Claim) Blocks() int {
	n := 0
	for _, e := range c.Extents {
		n += int(e.Len)
	}
	return n
}

// Allocate claims nblocks free blocks (nblocks >= 1). Requests larger than
// a segment come back as several extents of at most SegmentBlocks each; a
// request may also be scattered over several runs of a fragmented segment.
// The heap grows by whole segments as needed. The result is unpublished
// until Publish or Abort.
func (a *Allocator) Allocate(nblocks int) (Claim, error) {
	return a.allocate(-1, nblocks)
}

// AllocatePreferring is Allocate from cursor ci (modulo the number of
// cursors) if it is idle, else from any idle cursor. One goroutine that
// always prefers the same cursor gets, claim after claim, adjacent blocks
// of that cursor's segment while they fit after its last claim (fitRun),
// and can write them with one call.
func (a *Allocator) AllocatePreferring(ci, nblocks int) (Claim, error) {
	return a.allocate(ci%a.cfg.Cursors, nblocks)
}

// allocate is Allocate from cursor prefer if it is idle (prefer >= 0);
// AllocateFresh's cursor (prefer == freshCursor) is waited for instead.
func (a *Allocator) allocate(prefer, nblocks int) (Claim, error) {
	if nblocks < 1 {
		return Claim{}, fmt.Errorf("%w: allocate %d blocks", ErrInvalid, nblocks)
	}
	sb := a.g.SegmentBlocks
	if max := a.cfg.MaxSegments; max > 0 && nblocks > max*sb {
		return Claim{}, fmt.Errorf("%w: allocate %d blocks: the heap holds at most %d", ErrFull, nblocks, max*sb)
	}
	ci := prefer
	switch {
	case ci == a.freshCursor():
		a.cursors[ci].mu.Lock()
	case ci < 0 || !a.cursors[ci].mu.TryLock():
		ci = a.acquire()
	}
	c := &a.cursors[ci]
	defer c.mu.Unlock()
	exts := make([]Extent, 0, min(1+(nblocks-1)/sb, 64))
	for rem := nblocks; rem > 0; {
		n := min(rem, sb)
		var err error
		if exts, err = a.allocLocked(ci, n, exts); err != nil {
			for _, e := range exts {
				a.free(e)
			}
			return Claim{}, fmt.Errorf("alloc: allocate %d blocks: %w", nblocks, err)
		}
		rem -= n
	}
	slot, seq := c.unpub.add(exts)
	return Claim{Extents: exts, cur: int32(ci + 1), slot: slot, seq: seq}, nil
}

// acquire locks an idle cursor (of the first Config.Cursors, not
// AllocateFresh's) and returns its index. It starts at a random cursor
// (math/rand/v2's global source is per-thread, so this costs no shared
// write), tries each once without blocking, and if all are busy waits for
// the first one.
func (a *Allocator) acquire() int {
	n := a.cfg.Cursors
	start := int(rand.Uint32N(uint32(n)))
	for k := range n {
		i := start + k
		if i >= n {
			i -= n
		}
		if a.cursors[i].mu.TryLock() {
			return i
		}
	}
	a.cursors[start].mu.Lock()
	return start
}

// allocLocked claims n <= SegmentBlocks blocks for cursor ci and appends
// their extents to exts. REQUIRES: cursor ci's mu.
func (a *Allocator) allocLocked(ci, n int, exts []Extent) ([]Extent, error) {
	c := &a.cursors[ci]
	segs := *a.segs.Load()
	if c.seg >= 0 && segs[c.seg].free.Load() >= int64(n) {
		if off := fitRun(segs[c.seg].runsLocked(), c.hint, n); off >= 0 {
			return a.takeLocked(c, off, n, exts), nil
		}
	}
	if err := a.trade(ci, n); err != nil {
		return exts, err
	}
	s := (*a.segs.Load())[c.seg]
	if off := fitRun(s.runsLocked(), 0, n); off >= 0 {
		return a.takeLocked(c, off, n, exts), nil
	}
	// Enough free blocks but no run of n: scatter over the runs of at least
	// minPiece blocks (scatterLocked), or, if they hold too few, take an
	// empty segment (takeNew); where the heap may not grow, scatter over
	// runs of any length.
	if out, ok := a.scatterLocked(c, n, a.minPieceFor(n), exts); ok {
		return out, nil
	}
	if a.takeNew(ci) {
		s = (*a.segs.Load())[c.seg]
		if off := fitRun(s.runsLocked(), 0, n); off >= 0 {
			return a.takeLocked(c, off, n, exts), nil
		}
		return exts, fmt.Errorf("%w: new segment %d has no run of %d free blocks", ErrCorrupt, c.seg, n)
	}
	if out, ok := a.scatterLocked(c, n, 1, exts); ok {
		return out, nil
	}
	return exts, fmt.Errorf("%w: segment %d counts %d free blocks but has fewer", ErrCorrupt, c.seg, s.free.Load())
}

// growLocked appends an empty segment to the heap and gives it to cursor
// ci. REQUIRES: cursor ci's mu, poolMu; ci owns no segment.
func (a *Allocator) growLocked(ci int) {
	s := newSegment(bitmap.New(a.g.SegmentBlocks))
	s.runs = freeRuns{listed: true, runs: []freeRun{{0, int32(a.g.SegmentBlocks)}}}
	segs := append(*a.segs.Load(), s)
	a.segs.Store(&segs)
	a.grows.Add(1)
	a.assignLocked(ci, len(segs)-1)
}

// assignLocked gives segment i, which no one owns, to cursor ci, takes
// away its punched mark, and counts the trade. REQUIRES: cursor ci's mu,
// poolMu; ci owns no segment.
func (a *Allocator) assignLocked(ci, i int) {
	s := (*a.segs.Load())[i]
	s.owner = ci
	if s.punched {
		s.punched = false
		a.punchedCount.Add(-1)
	}
	a.cursors[ci].seg, a.cursors[ci].hint = i, 0
	a.trades.Add(1)
}

// releaseLocked gives up cursor c's segment, if it has one. REQUIRES:
// c.mu, poolMu.
func (a *Allocator) releaseLocked(c *cursor) {
	if c.seg >= 0 {
		s := (*a.segs.Load())[c.seg]
		s.longest.Store(longestRun(s.runsLocked()))
		s.owner = unowned
		c.seg = -1
	}
}

// takeLocked sets bits [off, off+n) of the cursor's segment, which must be
// clear and inside one run of the cursor's list (runsLocked), takes them
// out of the list, and appends the extent. REQUIRES: c.mu.
func (a *Allocator) takeLocked(c *cursor, off, n int, exts []Extent) []Extent {
	s := (*a.segs.Load())[c.seg]
	s.tookLocked(off, n)
	s.free.Add(-int64(n))
	if already := s.bits.SetRange(off, n); already != 0 {
		// Only the owner sets bits, and it just saw them clear.
		panic(fmt.Sprintf("alloc: segment %d: %d blocks at %d+%d set by a non-owner (invariant 6)",
			c.seg, already, off, n))
	}
	c.hint = off + n
	if c.hint == a.g.SegmentBlocks {
		c.hint = 0
	}
	sb := uint64(a.g.SegmentBlocks)
	return append(exts, Extent{Start: uint64(c.seg)*sb + uint64(off), Len: uint32(n)})
}

// trade gives up cursor ci's segment, if any, and takes the unowned segment
// with the most free blocks among those known to hold a run of n (their
// longest), else the one with the most free blocks, at least n; failing
// that, a segment stolen from an idle cursor once the heap is at
// MaxSegments; failing that, a new one.
//
// A claim trades when its cursor's segment has no run of n blocks, and
// the segment with the most free blocks often has none either: the claim
// was then scattered over shorter runs (scatter.go). A scattered value
// costs its writes and reads a call per piece: with sizes spread
// uniformly over 100 B-64 KiB, YCSB A ran 0.74-0.90x as fast as with
// scattering turned off, which let the heap grow to 1.23-1.25 times its
// live bytes against 1.10. Preferring a segment known to hold the claim
// (segment.longest) scattered 19% of that A's claims instead of 34%, and
// A ran 1.05x as fast by the median of eight pairs at the same space
// (BENCHMARKS.md, "Trades that look for a run").
// REQUIRES: cursor ci's mu.
func (a *Allocator) trade(ci, n int) error {
	c := &a.cursors[ci]
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	a.releaseLocked(c)
	if ci == a.freshCursor() && a.tradeFreshLocked(ci) {
		return nil
	}
	segs := *a.segs.Load()
	// A linear scan: trades are rare (a cursor trades once per segment's
	// worth of blocks in the steady state) and the table is small (a
	// terabyte of 4 KiB blocks in 64 MiB segments is 16384 entries). A
	// punched segment is taken only if no other has room, the first one
	// (lowest) then, so that holes at the end of the heap stay there to be
	// cut off.
	best, bestFree, hole := -1, int64(n-1), -1
	fit, fitFree := -1, int64(-1) // the most free of those with a run of n
	for i, s := range segs {
		if s.owner != unowned {
			continue
		}
		f := s.free.Load()
		if s.punched {
			if hole < 0 && f >= int64(n) {
				hole = i
			}
			continue
		}
		if f > bestFree {
			best, bestFree = i, f
		}
		if int(s.longest.Load()) >= n && f > fitFree {
			fit, fitFree = i, f
		}
	}
	if fit >= 0 {
		best = fit
	}
	if a.preferLow.Load() {
		if low := a.lowestWithRoom(segs, n); low >= 0 {
			best = low
		}
	}
	if best < 0 {
		best = hole
	}
	if best < 0 && a.cfg.MaxSegments > 0 && len(segs) >= a.cfg.MaxSegments {
		best = a.stealLocked(n)
		if best < 0 {
			return fmt.Errorf("%w: no segment has %d free blocks and the heap has %d segments (max)",
				ErrFull, n, len(segs))
		}
	}
	if best < 0 {
		a.growLocked(ci)
		return nil
	}
	a.assignLocked(ci, best)
	return nil
}

// stealLocked takes a segment with at least n free blocks away from an idle
// cursor and returns its index, or -1. It only TryLocks the other cursors, so
// it cannot deadlock with a holder of that cursor waiting for poolMu.
// REQUIRES: poolMu.
func (a *Allocator) stealLocked(n int) int {
	segs := *a.segs.Load()
	for i, s := range segs {
		if s.owner < 0 || s.free.Load() < int64(n) { // unowned (trade saw none fit) or held
			continue
		}
		o := &a.cursors[s.owner]
		if !o.mu.TryLock() {
			continue
		}
		o.seg = -1
		o.mu.Unlock()
		s.owner = unowned
		s.longest.Store(-1) // o may have claimed from it since it was listed
		return i
	}
	return -1
}

// Publish records that c is now referenced by logged state: it leaves the
// unpublished set and its blocks stay allocated. Publishing a claim that is
// no longer unpublished (or the zero Claim) does nothing. c must come from
// a's Allocate.
func (a *Allocator) Publish(c Claim) { a.settle(c, false) }

// Abort gives back the blocks of a claim whose write failed: it leaves the
// unpublished set and its bits are cleared. Aborting a claim that is no
// longer unpublished (already published or aborted, or the zero Claim) does
// nothing, so `defer a.Abort(c)` is safe.
func (a *Allocator) Abort(c Claim) { a.settle(c, true) }

func (a *Allocator) settle(cl Claim, abort bool) {
	if cl.cur <= 0 || int(cl.cur) > len(a.cursors) {
		return
	}
	c := &a.cursors[cl.cur-1]
	c.mu.Lock()
	// mu also covers the clearing, so Snapshot sees the claim either as
	// unpublished or as gone.
	defer c.mu.Unlock()
	exts, ok := c.unpub.remove(cl.slot, cl.seq)
	if ok && abort {
		for _, e := range exts {
			a.free(e)
		}
	}
}

// Free clears the bits of e now; any goroutine may call it at any time. It
// takes no lock but e's segment's freedMu, for as long as the clearing and
// a note for the segment's owner take (freeruns.go). The caller must
// already have made sure that nothing can still read e (design invariant
// 5). Blocks of e that were already free are counted in
// Stats.DoubleFreeBlocks. Free panics if e is not inside one segment of
// the heap: only pass extents that Allocate or MarkAllocated produced
// (CheckExtent validates an extent decoded from storage).
func (a *Allocator) Free(e Extent) {
	if err := a.CheckExtent(e); err != nil {
		panic(fmt.Sprintf("alloc: Free: %v", err))
	}
	a.free(e)
}

// free clears a checked extent, notes the run for the segment's list of
// free runs, and credits the segment's free count.
func (a *Allocator) free(e Extent) {
	si, off := a.g.locate(e)
	s := (*a.segs.Load())[si]
	s.freedMu.Lock()
	was := s.bits.ClearRange(off, int(e.Len))
	s.noteFreedLocked(int(off), int(e.Len))
	s.freedMu.Unlock()
	s.free.Add(int64(was))
	s.raiseLongest(int32(e.Len))
	if d := int(e.Len) - was; d != 0 {
		a.doubleFrees.Add(int64(d))
	}
}

// CheckExtent returns an error wrapping ErrCorrupt unless e is non-empty and
// lies inside one segment of the heap as it is now.
func (a *Allocator) CheckExtent(e Extent) error {
	if err := a.g.CheckExtent(e); err != nil {
		return err
	}
	if si, _ := a.g.locate(e); si >= uint64(a.Segments()) {
		return fmt.Errorf("%w: extent %v lies beyond the heap (%d segments)", ErrCorrupt, e, a.Segments())
	}
	return nil
}

// IsAllocated reports whether every block of e is allocated; false if e is
// not a valid extent of the heap.
func (a *Allocator) IsAllocated(e Extent) bool {
	if a.CheckExtent(e) != nil {
		return false
	}
	si, off := a.g.locate(e)
	return (*a.segs.Load())[si].bits.AllSet(off, int(e.Len))
}

// ForEachAllocated calls fn for each maximal run of allocated blocks within a
// segment, in block order, until fn returns false. Unpublished claims are
// included. Run concurrently with allocation it sees each bitmap word at some
// moment, not the whole heap at one moment.
func (a *Allocator) ForEachAllocated(fn func(Extent) bool) {
	forEachRun(a.g, a.bitmaps(), fn)
}

func (a *Allocator) bitmaps() []*bitmap.Bitmap {
	segs := *a.segs.Load()
	bms := make([]*bitmap.Bitmap, len(segs))
	for i, s := range segs {
		bms[i] = s.bits
	}
	return bms
}

func forEachRun(g Geometry, bms []*bitmap.Bitmap, fn func(Extent) bool) {
	for si, b := range bms {
		base := uint64(si) * uint64(g.SegmentBlocks)
		for off, n := range b.Runs() {
			if !fn(Extent{Start: base + uint64(off), Len: uint32(n)}) {
				return
			}
		}
	}
}

// Stats is a cheap summary of an Allocator. Under concurrent use each
// field is read at a slightly different moment.
type Stats struct {
	Segments         int   // heap size in segments
	AllocatedBlocks  int64 // blocks allocated (published or not)
	FreeBlocks       int64 // blocks free
	CursorTrades     int64 // times a cursor took a segment (first one included)
	Grows            int64 // segments added by Allocate
	Shrinks          int64 // segments cut off the end by ShrinkTail
	EmptySegments    int   // segments with no allocated block (punched ones included)
	PunchedSegments  int   // segments given back to the file system (reclaim.go)
	SparseSegments   int   // segments with live blocks, at most half of them
	DoubleFreeBlocks int64 // blocks passed to Free or Abort that were already free
}

// Stats returns counters read from per-segment atomic free counts (no
// bitmap scan). While a Free is in progress its blocks may still be counted
// as allocated.
func (a *Allocator) Stats() Stats {
	segs := *a.segs.Load()
	st := Stats{
		Segments:         len(segs),
		CursorTrades:     a.trades.Load(),
		Grows:            a.grows.Load(),
		Shrinks:          a.shrinks.Load(),
		DoubleFreeBlocks: a.doubleFrees.Load(),
	}
	for _, s := range segs {
		f := s.free.Load()
		st.FreeBlocks += f
		switch sb := int64(a.g.SegmentBlocks); {
		case f == sb:
			st.EmptySegments++
		case 2*f >= sb:
			st.SparseSegments++
		}
	}
	st.PunchedSegments = int(a.punchedCount.Load())
	st.AllocatedBlocks = int64(len(segs))*int64(a.g.SegmentBlocks) - st.FreeBlocks
	return st
}
