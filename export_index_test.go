package heapkv

import (
	"context"
	"errors"
	"fmt"
)

// CompactIndex runs a manual compaction of the whole index (every key, all
// levels) and waits for it: heapkv exposes no compaction, and the index
// damage and fault tests need one to read and rewrite every table. It
// returns Pebble's error unchanged; what the database does about a failed
// compaction is for the test to observe through the public API.
func CompactIndex(db *DB) error { return compactIndex(db, false) }

// CompactIndexParallel is CompactIndex with Pebble's parallel manual
// compaction, for building fixtures on an undamaged index (see below).
func CompactIndexParallel(db *DB) error { return compactIndex(db, true) }

// CompactIndexRange runs a manual compaction of the index's keys in
// [start, end) and waits for it: tables outside the range stay where they
// are (the partial-compaction case of the index fault tests).
func CompactIndexRange(db *DB, start, end []byte) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	ctx, cancel := db.untilFailed(context.Background())
	defer cancel()
	return compactResult(db, db.index.Compact(ctx, start, end, false))
}

// compactResult is err, or the database's failure if the compaction was
// abandoned because of it.
func compactResult(db *DB, err error) error {
	if err != nil && errors.Is(err, context.Canceled) {
		if ferr := db.failed(); ferr != nil {
			return ferr
		}
	}
	return err
}

func compactIndex(db *DB, parallel bool) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	// Keys are 1..MaxKeySize bytes: every key is >= {0} and < MaxKeySize+1
	// bytes of 0xff.
	// Trials run it serially: when one of Pebble's parallel manual
	// compactions fails, Pebble cancels its pending siblings and can then
	// run one it had already picked, which trips an assertion (a panic on
	// Pebble's goroutine) in runPickedCompaction. heapkv itself never
	// compacts by hand.
	ctx, cancel := db.untilFailed(context.Background())
	defer cancel()
	lo, hi := indexSpan(nil, nil)
	return compactResult(db, db.index.Compact(ctx, lo, hi, parallel))
}

// IndexLevels returns the index's table count per level.
func IndexLevels(db *DB) [7]int64 {
	var n [7]int64
	for i, l := range db.index.Metrics().Levels {
		n[i] = l.TablesCount
	}
	return n
}

// IndexTables describes the index's tables, level by level.
func IndexTables(db *DB) string {
	tl, err := db.index.SSTables()
	if err != nil {
		return err.Error()
	}
	s := ""
	for l, ts := range tl {
		for _, t := range ts {
			s += fmt.Sprintf("L%d [%q,%q] ", l, t.Smallest.UserKey, t.Largest.UserKey)
		}
	}
	return s
}

// IndexCompactions returns how many flushes and compactions the index has
// run since it was opened.
func IndexCompactions(db *DB) (flushes, compactions int64) {
	m := db.index.Metrics()
	return m.Flush.Count, m.Compact.Count
}
