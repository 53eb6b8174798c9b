package heapkv

import (
	"bytes"
	"context"

	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/pace"
)

// Clustering: heap values laid out in key order (ARCHITECTURE.md,
// refinement 61).
//
// A value's blocks go wherever the allocator finds room when it is
// written, so the heap holds values in the order they were written, not in
// key order, and a range scan reads each value from a different place: in
// YCSB E over 1 KB records loaded in YCSB's hashed key order, copying
// values out of the heap's map took 40% of heapkv's CPU, most of it
// waiting for memory. Compact with CompactOptions.Cluster rewrites every
// heap value in key order into empty segments (alloc.AllocateFresh), much
// as PostgreSQL's CLUSTER rewrites a table in index order; a scan then
// reads neighbouring keys' values from neighbouring blocks. Writes after it
// go wherever there is room, so the order decays with the values rewritten
// since, and clustering again restores it.
//
// The moves are Compact's (moveKeys): transactions that lose to any
// concurrent write of the same key, so nothing a writer did is undone, and
// a crash leaves each value where it was or where it moved, never both.
// Each move reads its key's entry in the transaction's snapshot and hands
// it to the commit as the state it replaces (Txn.commitMoves), which the
// conflict check makes exact, so the commit looks nothing up.
// The old blocks are freed as usual, once the moving records are vouched
// for and no reader pins them (db.vouch after every compactGroupBytes
// moved). Values leave the old segments in key order, not segment by
// segment, so few segments empty before the end: the heap needs free disk
// space for about a second copy of its values while clustering, and the
// emptied segments are punched when it is done (Compact's punchEmpty).
// Within one moving transaction, values above CarryLimit are claimed as
// the transaction applies and the smaller ones by the commit leader after
// (carried.go), so a batch that mixes the two puts its large values first.

// cluster moves every heap value, in key order, into empty segments: of
// every key, or of the keys within o's cluster bounds.
func (db *DB) cluster(ctx context.Context, o *CompactOptions, res *CompactResult) error {
	every := func([]alloc.Extent) bool { return true }
	next := int64(compactGroupBytes)
	after := func(moved int64) error {
		if moved < next {
			return nil
		}
		next = moved + compactGroupBytes
		if err := db.vouch(); err != nil { // frees the old blocks, unless a reader pins them
			return err
		}
		if o.Progress != nil {
			o.Progress(*res)
		}
		return nil
	}
	m := &mover{db: db, in: every, lo: o.ClusterLowerBound, hi: o.ClusterUpperBound,
		fresh: true, pacer: pace.New(o.BytesPerSecond), after: after, res: res}
	if err := m.run(ctx); err != nil {
		return err
	}
	if err := db.vouch(); err != nil {
		return err
	}
	return db.compactIndex(ctx, m.lo, m.hi)
}

// compactIndex compacts the index over the keys in [lo, hi) (nil: no
// bound) and waits for it. A clustering rewrote every entry there, so
// until compactions catch up the index holds two versions of each, and a
// scan steps over the dead one at every key:
// YCSB E on 2.4 million clustered 1 KB records ran at 32,446-40,383 ops/s
// before the index was compacted and 42,746-48,262 after (BENCHMARKS.md,
// "Values in key order"). Compacting is what an LSM would do in time
// anyway; here it costs a rewrite of the index's tables (about 44 bytes a
// key), small beside the values just moved. The wait ends with ctx (Close
// cancels Compact's) or when the database fails.
func (db *DB) compactIndex(ctx context.Context, lo, hi []byte) error {
	ctx, cancel := db.untilFailed(ctx)
	defer cancel()
	// Serial: Pebble's parallel manual compaction can trip an assertion
	// when one of its parts fails.
	lo, hi = indexSpan(lo, hi)
	if err := db.index.Compact(ctx, lo, hi, false); err != nil {
		if ferr := db.failed(); ferr != nil {
			return ferr
		}
		return indexError("compact after clustering", err)
	}
	return nil
}

// indexSpan returns lo and hi with a nil bound replaced by one outside
// every key: keys are 1..MaxKeySize bytes, so every key is >= {0} and <
// MaxKeySize+1 bytes of 0xff.
func indexSpan(lo, hi []byte) ([]byte, []byte) {
	if lo == nil {
		lo = []byte{0}
	}
	if hi == nil {
		hi = bytes.Repeat([]byte{0xff}, MaxKeySize+1)
	}
	return lo, hi
}
