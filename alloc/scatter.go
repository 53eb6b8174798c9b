package alloc

import (
	"cmp"
	"slices"
)

// Placement in a fragmented segment. When a cursor's segment and the one
// it trades for both lack a run of free blocks long enough for a claim,
// the claim is scattered over several runs (scatterLocked), but only over
// runs worth a write each (minPieceFor); if those hold too few blocks,
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

// minPieceFor returns the shortest run a scattered claim of n blocks takes
// a piece from: minPieceBytes, or a sixteenth of the claim if that is
// longer.
func (a *Allocator) minPieceFor(n int) int { return max(a.minPiece, n/minPieceFraction) }

// minPieceFraction bounds a large claim's pieces from below as a share of
// the claim: a claim of 32 KiB takes no piece under 2 KiB. With values
// uniform in 100 B-64 KiB, 768-byte pieces split a scattered claim into
// 4.0 pieces on average in the allocator benchmark
// (BenchmarkReplaceVariedSizes), a sixteenth into 2.6 and an eighth into
// 2.0; the heap grew from 1.142x the live blocks to 1.173x and 1.204x.
// With log-normal values around 2 KiB nearly no claim is long enough for
// the fraction to matter. A sixteenth was chosen (BENCHMARKS.md, "Free
// runs listed per cursor").
const minPieceFraction = 16

// scatterLocked claims n blocks of the cursor's segment over its runs of
// at least minPiece free blocks and reports false, claiming nothing, if
// those runs hold fewer than n blocks. It takes the runs in address order
// if that needs at most maxInOrderPieces of them; otherwise it takes the
// longest runs first, so that the claim is split into as few pieces as the
// segment allows. Address order keeps the longest runs for claims that fit
// them whole: taking them first for every scattered claim made a cursor
// trade segments 1.6 times as often in the allocator benchmark of
// log-normal values, for 5% fewer pieces. The last piece may be cut from
// the start of a longer run. Pieces are taken, and their extents appended,
// in address order. REQUIRES: c.mu, c owns a segment.
func (a *Allocator) scatterLocked(c *cursor, n, minPiece int, exts []Extent) ([]Extent, bool) {
	runs := (*a.segs.Load())[c.seg].runsLocked()
	// One pass counts the blocks in runs of at least minPiece and the runs
	// address order would take, and keeps the first len(top) of those runs
	// in the order longest, then lowest (sorted by insertion).
	var top [maxLongestPieces]freeRun
	have, inOrder, k := 0, 0, 0
	for _, r := range runs {
		if int(r.n) < minPiece {
			continue
		}
		if have < n {
			inOrder++
		}
		have += int(r.n)
		if k == len(top) && !precedes(r, top[k-1]) {
			continue
		}
		j := min(k, len(top)-1)
		k = min(k+1, len(top))
		for ; j > 0 && precedes(r, top[j-1]); j-- {
			top[j] = top[j-1]
		}
		top[j] = r
	}
	if have < n {
		return exts, false
	}
	var buf [2 * maxLongestPieces]freeRun
	pieces := buf[:0]
	rem := n
	take := func(r freeRun) {
		pieces = append(pieces, freeRun{r.off, int32(min(int(r.n), rem))})
		rem -= int(pieces[len(pieces)-1].n)
	}
	if inOrder > maxInOrderPieces {
		for i := 0; i < k && rem > 0; i++ {
			take(top[i])
		}
	}
	// In address order: all of it, or what the longest runs left (runs
	// after top[k-1] in the longest-first order).
	for _, r := range runs {
		if rem == 0 {
			break
		}
		if int(r.n) >= minPiece && (inOrder <= maxInOrderPieces || precedes(top[k-1], r)) {
			take(r)
		}
	}
	slices.SortFunc(pieces, func(x, y freeRun) int { return cmp.Compare(x.off, y.off) })
	for _, p := range pieces {
		exts = a.takeLocked(c, int(p.off), int(p.n), exts)
	}
	return exts, true
}

// maxInOrderPieces is how many pieces a scattered claim may take in
// address order before scatterLocked takes the longest runs first instead.
// Chosen with the allocator benchmark (BenchmarkReplaceVariedSizes): with
// values uniform in 100 B-64 KiB, address order split a claim into 6.6
// pieces on average and longest first into 3.9-4.0; with log-normal values
// around 2 KiB the limit keeps nearly all scattered claims in address
// order.
const maxInOrderPieces = 4

// maxLongestPieces is how many runs scatterLocked picks longest first;
// a claim they do not cover takes the rest in address order.
const maxLongestPieces = 8

// precedes reports whether run x comes before run y in the longest-first
// order: longer first, then lower.
func precedes(x, y freeRun) bool {
	return x.n > y.n || (x.n == y.n && x.off < y.off)
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
	a.releaseLocked(c)
	if empty < 0 {
		a.growLocked(ci)
	} else {
		a.assignLocked(ci, empty)
	}
	return true
}
