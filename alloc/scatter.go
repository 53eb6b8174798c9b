package alloc

// Placement in a fragmented segment. When a cursor's segment and the one
// it trades for both lack a run of free blocks long enough for a claim,
// the claim is scattered over several runs (scatterLocked), but only over
// runs worth a write each (minPieceBytes); if those hold too few blocks,
// the cursor takes an empty segment instead (takeNew). A heap at
// MaxSegments, or one whose end a compaction is emptying, scatters over
// runs of any length when it has no empty segment.

// minPieceBytes is the shortest piece a scattered claim takes from one run
// of free blocks (its last piece may be shorter, cut from a longer run).
// Each piece costs its writer a write call: 4.4-4.8 µs of CPU a call in
// YCSB A on the machine of BENCHMARKS.md. With 128-byte blocks and values
// of varied sizes, updates leave the free space of older segments in holes
// of a few blocks; scattering over all of them split YCSB A's log-normal
// values (median 2 KiB) into 1.9 pieces on average (4.2 in a simulation of
// the allocator alone). A claim whose segment holds too few blocks in runs of this
// length takes an empty segment instead, leaving the short runs to claims
// that fit them whole and to the frees of their neighbours, which lengthen
// them. 768 bytes (6 blocks of 128) was chosen by measurement: 1 KiB took
// more space than issue 16's 1.15 allows, 512 bytes ran A no faster in two
// rounds (BENCHMARKS.md, "Scattered values: no piece under 768 bytes").
// For 4 KiB blocks it is one block: any run, as before.
const minPieceBytes = 768

// scatterLocked claims n blocks of the cursor's segment over its runs of
// at least minPiece free blocks, in address order, and reports false,
// claiming nothing, if those runs hold fewer than n blocks. Frees only
// lengthen runs, so the runs counted are still there when they are taken.
// REQUIRES: c.mu, c owns a segment.
func (a *Allocator) scatterLocked(c *cursor, n, minPiece int, exts []Extent) ([]Extent, bool) {
	s := (*a.segs.Load())[c.seg]
	have := 0
	for _, l := range s.bits.ClearRuns() {
		if l >= minPiece {
			if have += l; have >= n {
				break
			}
		}
	}
	if have < n {
		return exts, false
	}
	rem := n
	for off, l := range s.bits.ClearRuns() {
		if l < minPiece {
			continue
		}
		k := min(l, rem)
		exts = a.takeLocked(c, off, k, exts)
		if rem -= k; rem == 0 {
			break
		}
	}
	return exts, true
}

// takeNew gives up cursor ci's segment and takes an empty one: an unowned
// segment with no block allocated (one given back to the file system
// included), else a new one at the end of the heap. With no empty segment
// it does not grow a heap at MaxSegments, nor one whose end a compaction
// is emptying (SetPreferLow): it changes nothing and reports false, and
// the claim is scattered over shorter runs. REQUIRES: cursor ci's mu.
func (a *Allocator) takeNew(ci int) bool {
	c := &a.cursors[ci]
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	segs := *a.segs.Load()
	empty := -1
	for i, s := range segs {
		if s.owner == unowned && s.free.Load() == int64(a.g.SegmentBlocks) {
			empty = i
			break
		}
	}
	if empty < 0 && (a.preferLow.Load() || (a.cfg.MaxSegments > 0 && len(segs) >= a.cfg.MaxSegments)) {
		return false
	}
	if c.seg >= 0 {
		segs[c.seg].owner = unowned
		c.seg = -1
	}
	if empty < 0 {
		a.growLocked(ci)
		return true
	}
	s := segs[empty]
	s.owner = ci
	if s.punched {
		s.punched = false
		a.punchedCount.Add(-1)
	}
	c.seg, c.hint = empty, 0
	a.trades.Add(1)
	return true
}
