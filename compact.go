package heapkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/pace"
)

// Giving space back to the file system (ARCHITECTURE.md, refinement 31).
//
// A freed heap block is reused by the next write that fits it, but the
// file never shrank: delete every value and the heap file keeps its size
// and its disk blocks. Compact gives them back in three steps:
//
//  1. Move: segments that are mostly free (at most CompactOptions.MaxLive
//     of their blocks live) are held, so no writer allocates in them; the
//     index is scanned for the values they hold, and each is rewritten
//     through an ordinary transaction, which allocates it elsewhere. The
//     transaction conflicts if the key was written after it began, so a
//     concurrent overwrite or delete wins and is never undone. The old
//     blocks are freed the usual way (invariant 5): when the moving record
//     is vouched for and no reader is pinned below it.
//  2. Punch: every segment that no writer owns and that is entirely free
//     is held and its file space given back with a hole
//     (FALLOC_FL_PUNCH_HOLE), on every writable replica. The allocator
//     takes punched segments last, so holes stay holes while other space
//     lasts. Runs of at least CompactOptions.MinHoleBytes (16 KiB) free
//     inside the other segments get holes too.
//  3. Cut: empty segments at the end of the heap are removed from the
//     allocator and the files are truncated.
//
// With CompactOptions.Cluster, step 1 moves every heap value instead, in
// key order, into empty segments (cluster.go), and the index is compacted
// after it.
//
// Punching and cutting change no allocated block, so they need no log
// record: a crash that loses them leaves free blocks holding old bytes,
// which nothing reads. On a file system that cannot punch or truncate
// (MemFS; not Linux) Compact still moves values and reports that the file
// space could not be given back.

// DefaultCompactMaxLive is CompactOptions.MaxLive's default.
const DefaultCompactMaxLive = 0.5

// compactGroupBytes bounds the live bytes of the segments one move step
// holds at once (and so the writers' space taken out of circulation).
const compactGroupBytes = 64 << 20

// CompactOptions tunes Compact. The zero value gives the defaults.
type CompactOptions struct {
	// MaxLive: segments with at most this fraction of their blocks live
	// have their values moved out, so the whole segment can be given
	// back. 0 means DefaultCompactMaxLive; a negative value moves nothing
	// (only free segments are punched and cut). At most 1.
	MaxLive float64
	// BytesPerSecond limits the rate of moved value bytes; 0: no limit.
	BytesPerSecond int64
	// MinHoleBytes: runs of free blocks at least this long inside
	// segments that keep live values are given back with a hole (empty
	// segments always are). 0 means DefaultCompactMinHole; a negative
	// value punches no such runs.
	MinHoleBytes int64
	// Cluster rewrites every heap value in key order into empty segments,
	// so that range scans read neighbouring keys' values from neighbouring
	// blocks, compacts the index, and gives the emptied space back as
	// usual (ARCHITECTURE.md, refinement 61). MaxLive is not used: every
	// value moves. It needs free disk space for about a second copy of the
	// heap's values while it runs. Values written after it go wherever
	// there is room, so scans over them gain only from the next one.
	Cluster bool
	// ClusterLowerBound and ClusterUpperBound, if not nil, limit Cluster
	// to the keys k with ClusterLowerBound <= k < ClusterUpperBound, as
	// IterOptions' bounds limit an iterator: only those keys' values move,
	// in key order, and the free disk space needed is about a second copy
	// of theirs; the index is compacted over that range only. Setting
	// either without Cluster, or a lower bound not below the upper one (a
	// range no key can be in), is an error wrapping ErrInvalidOptions.
	ClusterLowerBound, ClusterUpperBound []byte
	// Progress, if set, is called after each group of segments is moved
	// (with Cluster: after every 64 MiB moved) and at the end, from
	// Compact's goroutine.
	Progress func(CompactResult)
}

// CompactResult says what Compact did.
type CompactResult struct {
	SegmentsMoved   int   `json:"segments_moved"`   // sparse segments whose values were moved out
	ValuesMoved     int64 `json:"values_moved"`     // values rewritten elsewhere
	BytesMoved      int64 `json:"bytes_moved"`      // their bytes (as the caller sees them)
	Conflicts       int64 `json:"conflicts"`        // moving transactions retried because a key changed
	SegmentsPunched int   `json:"segments_punched"` // empty segments given back with a hole
	HolesPunched    int   `json:"holes_punched"`    // runs of free blocks punched inside other segments
	SegmentsCut     int   `json:"segments_cut"`     // empty segments cut off the end of the heap
	// Unsupported is set when the heap's file system cannot punch holes
	// or truncate (MemFS, a platform other than Linux): values were moved
	// but no file space was given back.
	Unsupported bool `json:"unsupported"`
	// The heap file (the first in-sync replica) before and after: its
	// size, and the bytes the file system has allocated to it (-1 where
	// the platform cannot tell).
	FileBytesBefore      int64 `json:"file_bytes_before"`
	FileBytesAfter       int64 `json:"file_bytes_after"`
	AllocatedBytesBefore int64 `json:"allocated_bytes_before"`
	AllocatedBytesAfter  int64 `json:"allocated_bytes_after"`
}

// Compact gives free heap space back to the file system (see above). It
// runs while readers and writers go on; one Compact runs at a time (a
// second waits). It returns ctx's error if cancelled, with what was done
// so far; a cancelled or failed Compact leaves the database consistent.
func (db *DB) Compact(ctx context.Context, opts *CompactOptions) (CompactResult, error) {
	var o CompactOptions
	if opts != nil {
		o = *opts
	}
	var res CompactResult
	if math.IsNaN(o.MaxLive) || o.MaxLive > 1 || o.BytesPerSecond < 0 {
		return res, fmt.Errorf("%w: compact: MaxLive %v (want at most 1) or BytesPerSecond %d (want >= 0)",
			ErrInvalidOptions, o.MaxLive, o.BytesPerSecond)
	}
	if err := o.checkClusterBounds(); err != nil {
		return res, err
	}
	if o.MaxLive == 0 {
		o.MaxLive = DefaultCompactMaxLive
	}
	if o.MinHoleBytes == 0 {
		o.MinHoleBytes = DefaultCompactMinHole
	}
	if err := db.errIfReadOnly("compact"); err != nil {
		return res, err
	}
	db.compactMu.Lock()
	defer db.compactMu.Unlock()
	// Counted among the background work Close waits for, not held inside
	// enter: Compact's own writes enter the database, and Close cancels
	// it instead of waiting it out (as Scrub).
	if err := db.enter(); err != nil {
		return res, err
	}
	db.bg.wg.Add(1)
	db.leave()
	defer db.bg.wg.Done()
	ctx, cancel := db.untilClose(ctx)
	defer cancel()
	if err := db.failed(); err != nil {
		return res, fmt.Errorf("heapkv: compact: %w", err)
	}
	res.FileBytesBefore, res.AllocatedBytesBefore, _ = db.heap.SpaceUsed()
	err := db.compact(ctx, &o, &res)
	res.FileBytesAfter, res.AllocatedBytesAfter, _ = db.heap.SpaceUsed()
	if o.Progress != nil {
		o.Progress(res)
	}
	if err != nil {
		return res, fmt.Errorf("heapkv: compact: %w", err)
	}
	return res, nil
}

// checkClusterBounds rejects cluster bounds without Cluster, and a lower
// bound not below the upper one.
func (o *CompactOptions) checkClusterBounds() error {
	lo, hi := o.ClusterLowerBound, o.ClusterUpperBound
	switch {
	case (lo != nil || hi != nil) && !o.Cluster:
		return fmt.Errorf("%w: compact: ClusterLowerBound or ClusterUpperBound set without Cluster", ErrInvalidOptions)
	case hi != nil && bytes.Compare(lo, hi) >= 0:
		return fmt.Errorf("%w: compact: ClusterLowerBound %q is not below ClusterUpperBound %q", ErrInvalidOptions, lo, hi)
	}
	return nil
}

func (db *DB) compact(ctx context.Context, o *CompactOptions, res *CompactResult) error {
	// Frees that wait only for a vouch are released first, so segments
	// emptied by earlier deletes count as empty.
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := db.vouch(); err != nil {
		return err
	}
	// Segments the cursors hold (the last written) become candidates too.
	db.alloc.DropCursorSegments()
	// Empty segments first: once punched, trades prefer the other
	// segments, so moved values do not land in them. Runs inside segments
	// wait until the values have moved (they would fill them).
	if err := db.punchEmpty(res, o.MaxLive <= 0, o.MinHoleBytes); err != nil {
		return err
	}
	if o.Cluster {
		if err := db.cluster(ctx, o, res); err != nil {
			return err
		}
		db.alloc.DropCursorSegments()
		if err := db.punchEmpty(res, true, o.MinHoleBytes); err != nil {
			return err
		}
	} else if o.MaxLive > 0 {
		db.alloc.SetPreferLow(true)
		err := db.moveSparse(ctx, o, res)
		db.alloc.SetPreferLow(false)
		if err != nil {
			return err
		}
		db.alloc.DropCursorSegments()
		if err := db.punchEmpty(res, true, o.MinHoleBytes); err != nil {
			return err
		}
	}
	if res.Unsupported {
		return nil
	}
	sb := uint64(db.geom.SegmentBlocks)
	from, to, err := db.alloc.ShrinkTail(func(n int) error { return db.heap.Truncate(uint64(n) * sb) })
	if errors.Is(err, errors.ErrUnsupported) {
		res.Unsupported = true
		return nil
	}
	res.SegmentsCut += from - to
	return err
}

// DefaultCompactMinHole is CompactOptions.MinHoleBytes's default: a run
// of 16 KiB holds whole pages even where it does not start on one.
const DefaultCompactMinHole = 16 << 10

// notePunched marks punched the empty segments whose file space an
// earlier handle gave back (mirror.Set.IsHole: one lseek a segment), since
// the allocation snapshot does not record the mark: without it a reopened
// database counted none given back in Stats, and its trades took those
// segments as soon as any other, allocating disk space again while empty
// segments that still hold theirs sat unused. Where holes cannot be found
// (MemFS, another platform) nothing is marked. Open calls it once the
// allocation state is recovered, before any writer runs.
func (db *DB) notePunched() {
	sb := db.geom.SegmentBlocks
	for seg := range db.alloc.Segments() {
		if !db.alloc.IsEmpty(seg) {
			continue
		}
		hole, err := db.heap.IsHole(uint64(seg)*uint64(sb), sb)
		if err != nil {
			return
		}
		if hole {
			db.alloc.MarkPunched(seg)
		}
	}
}

// punchEmpty holds every empty, unpunched segment no writer owns, punches
// it on every writable replica and releases it marked punched; then, with
// runs, it punches the runs of at least minHole free bytes inside the
// other segments no writer owns.
func (db *DB) punchEmpty(res *CompactResult, runs bool, minHole int64) error {
	if res.Unsupported {
		return nil
	}
	sb := db.geom.SegmentBlocks
	held := db.alloc.HoldEmpty()
	punched := make(map[int]bool, len(held))
	var err error
	for _, s := range held {
		if err = db.heap.PunchHole(uint64(s)*uint64(sb), sb); err != nil {
			break
		}
		punched[s] = true
		res.SegmentsPunched++
	}
	db.alloc.Release(held, func(s int) bool { return punched[s] })
	if err == nil && runs && minHole > 0 {
		minRun := int(max(minHole/int64(db.geom.BlockSize), 1))
		held = db.alloc.HoldFragmented(minRun)
	punch:
		for _, s := range held {
			for _, e := range db.alloc.FreeRuns(s, minRun) {
				if err = db.heap.PunchHole(e.Start, int(e.Len)); err != nil {
					break punch
				}
				res.HolesPunched++
			}
		}
		db.alloc.Release(held, nil)
	}
	if errors.Is(err, errors.ErrUnsupported) {
		res.Unsupported = true
		return nil
	}
	return err
}

// moveSparse moves the values out of sparse segments, a group at a time
// from the end of the heap, each segment at most once.
func (db *DB) moveSparse(ctx context.Context, o *CompactOptions, res *CompactResult) error {
	sb := db.geom.SegmentBlocks
	maxLive := int(o.MaxLive * float64(sb))
	groupBlocks := max(compactGroupBytes/db.geom.BlockSize, 1)
	pacer := pace.New(o.BytesPerSecond)
	done := make(map[int]bool)
	for {
		// A group of segments, from the end of the heap, whose live blocks
		// fit with a quarter to spare (a value needs its blocks in one
		// segment) in the free blocks of the segments below them: moved
		// values fill the start (SetPreferLow), and the end empties. At
		// most compactGroupBytes of them, unless one segment alone is more.
		us := db.alloc.Usage()
		below := make([]int64, len(us)+1) // free blocks in the usable segments below i
		for i, u := range us {
			below[i+1] = below[i]
			if !u.Held {
				below[i+1] += int64(u.Free)
			}
		}
		var group []int
		live := 0
		for _, u := range db.alloc.SparseSegments(maxLive) {
			if done[u.Index] {
				continue
			}
			l := sb - u.Free
			need := int64(live + l)
			if len(group) > 0 && live+l > groupBlocks || need+need/4 > below[u.Index] {
				break
			}
			group = append(group, u.Index)
			live += l
		}
		if len(group) == 0 {
			return nil
		}
		for _, s := range group {
			done[s] = true
		}
		db.alloc.DropCursorSegments() // writers trade for low segments (SetPreferLow)
		held := db.alloc.Hold(group)
		err := db.moveOut(ctx, held, pacer, res)
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			err = db.vouch() // frees the moved values' old blocks, unless a reader pins them
		}
		db.alloc.Release(held, nil)
		if err != nil {
			return err
		}
		for _, s := range held {
			if db.alloc.IsEmpty(s) {
				res.SegmentsMoved++
			}
		}
		// Punched, the emptied segments are taken last: the next group's
		// values go below them.
		if err := db.punchEmpty(res, false, 0); err != nil {
			return err
		}
		if o.Progress != nil {
			o.Progress(*res)
		}
	}
}

// moveOut rewrites every value with a block in the held segments.
func (db *DB) moveOut(ctx context.Context, held []int, pacer *pace.Pacer, res *CompactResult) error {
	if len(held) == 0 {
		return nil
	}
	sb := uint64(db.geom.SegmentBlocks)
	slices.Sort(held)
	in := func(exts []alloc.Extent) bool {
		return slices.ContainsFunc(exts, func(e alloc.Extent) bool {
			_, ok := slices.BinarySearch(held, int(e.Start/sb))
			return ok
		})
	}
	return (&mover{db: db, in: in, pacer: pacer, res: res}).run(ctx)
}
