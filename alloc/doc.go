// Package alloc hands out heap space: runs of fixed-size blocks inside
// fixed-size segments, tracked by one bitmap per segment, with no shared lock
// on the allocation fast path.
//
// # Model
//
// The heap is a sequence of segments (Geometry.SegmentBlocks blocks each) that
// grows as writers need it and shrinks only when a reclaimer cuts empty
// segments off its end (ShrinkTail). Each segment has a bitmap (a set bit is an allocated block),
// an atomic count of free blocks, and at most one owner. The owners are
// cursors: an Allocator has Config.Cursors of them, each a mutex plus the one
// segment it owns. Allocate takes any idle cursor (TryLock, starting at a
// random index) and claims a run of free blocks from that cursor's segment:
// right after the cursor's last claim if it fits there (AllocatePreferring
// tries a given cursor first: a single goroutine that keeps to one cursor
// gets adjacent runs), else at the start of the shortest run that holds it
// (best fit). The search reads a list of the segment's free runs, which
// stays with the segment when its owner changes and takes in the runs
// others freed in it since the owner last looked; the bitmap is walked
// again only for a segment nobody listed yet or one changed past what
// the list can take in (freeruns.go). Because a
// segment has one owner and only its owner sets bits in it (design
// invariant 6), writers that hold different cursors
// never touch the same bitmap words to allocate. Free may clear bits from any
// goroutine at any time, holding only the segment's freedMu (a lock no
// one holds for long: the owner takes it to merge what was freed), with
// no cursor or pool lock.
//
// When a cursor's segment cannot supply a contiguous run, the cursor trades
// it: under the pool mutex (the rare path) it gives the segment up, noting
// the segment's longest free run, and takes the unowned segment with the
// most free blocks among those known to hold a run that long (a hint kept
// per segment: the run its last owner listed, raised by every Free), else
// the one with the most free blocks, or grows the heap by a segment if no
// unowned segment has enough. If the segment it takes has
// enough free blocks but no long enough run, the claim is scattered over
// several runs, each a piece of at least 768 bytes and a sixteenth of the
// claim (scatter.go: every piece costs its writer a write call), in
// address order if that takes at most four pieces, else the longest runs
// first; if the runs that long hold too few blocks, the cursor takes an
// empty segment instead; only a heap at MaxSegments, or one whose end a
// compaction is emptying (SetPreferLow), scatters over shorter runs. A
// request for more than SegmentBlocks blocks always comes back as several
// extents.
//
// AllocateFresh is for a caller that writes values in an order worth
// keeping (heapkv's clustering compaction): its claims come from a cursor
// of its own that takes only empty or new segments, so consecutive claims
// sit in consecutive blocks (fresh.go).
//
// # Claims
//
// Allocate returns a Claim: the extents, in order, plus a registration in the
// cursor's set of unpublished claims. The caller writes its data, then either
// Publishes the claim (a durable log record now references it) or Aborts it
// (the write failed; the blocks return to the free pool). Publish and Abort
// are idempotent and Abort after Publish does nothing, so `defer a.Abort(c)`
// is always safe.
//
// Free does not delay reuse: the caller must only free an extent once the
// record that freed it is durable and no reader can still see it (design
// invariant 5).
//
// # Reclaiming space
//
// A reclaimer (heapkv's Compact) holds segments no cursor owns, so that no
// block is allocated in them while it moves their extents out or gives
// their file space back; it releases an emptied one marked punched, and
// trades take punched segments last. SetPreferLow makes trades fill the
// start of the heap while a compaction empties its end. reclaim.go has the
// details.
//
// # Snapshots and recovery
//
// Snapshot copies every bitmap while holding every cursor, then removes the
// unpublished claims from the copy, so a snapshot never contains a block that
// no log record references. Frees that run concurrently with Snapshot may or
// may not be reflected, block by block; callers that need an exact picture
// must not Free while they take one. Snapshot.MarshalBinary and
// UnmarshalSnapshot encode a snapshot (see the byte layout in snapshot.go);
// Restore builds an Allocator from one. Recovery then replays the log with
// MarkAllocated and MarkFree, which report any contradiction as ErrCorrupt.
//
// # Locks
//
// Lock order: a cursor's mu, then the pool mu, then a segment's freedMu
// (a leaf: nothing is locked under it). Snapshot takes every cursor's
// mu in index order; nothing blocks on a second cursor's mu while holding
// one (the only other cursor lock taken under a cursor lock is a TryLock).
// The package does no I/O, and holds a lock across the caller's I/O in one
// place only: ShrinkTail calls its truncate function with the pool mu held.
package alloc
