package heapkv

import (
	"context"
	"time"
)

// Zeros ahead of the heap (ARCHITECTURE.md, refinement 41).
//
// A durable group whose values are not carried in its records flushes the
// heap before the log (invariant 1). In a growing database those values sit
// in blocks the heap file never had, and on ext4 the flush of a block
// written for the first time is also a journal commit: the group then pays
// two commits in series. The zeroer keeps zeroAheadSegments segments of
// zeros written and flushed past the heap's last write (mirror.ZeroAhead),
// so the segments the allocator hands out next are already part of the
// file and the group's heap flush is of data alone.
//
// It runs only while such groups do: each one wakes it (wantZeros). Loads
// of NoSync or carried values flush the heap only at checkpoints, in the
// background, and zeros would write their bytes twice for nothing. A
// failure (a full disk, an I/O error) pauses it for zeroPause; a failed
// flush of zeros leaves nothing the database relies on, since no block past
// the heap's last write holds data.

// zeroAheadSegments is how many segments of zeros the zeroer keeps past
// the allocator's last segment.
const zeroAheadSegments = 4

// zeroPause is how long the zeroer rests after a failure.
const zeroPause = time.Minute

// zeroer is the state of the zeroer goroutine.
type zeroer struct {
	want chan struct{} // a durable group flushed the heap for uncarried values
}

// wantZeros wakes the zeroer without waiting for it.
func (db *DB) wantZeros() {
	select {
	case db.zeros.want <- struct{}{}:
	default:
	}
}

// zeroAhead is the zeroer goroutine, started by Open on a writable
// database and stopped by Close.
func (db *DB) zeroAhead() {
	defer db.bg.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-db.bg.stop
		cancel()
	}()
	var pausedUntil time.Time
	for {
		select {
		case <-db.bg.stop:
			return
		case <-db.zeros.want:
		}
		if time.Now().Before(pausedUntil) || db.failed() != nil || db.reserve.diskFull.Load() {
			continue
		}
		target := uint64(db.alloc.Segments()+zeroAheadSegments) * uint64(db.geom.SegmentBlocks)
		// Zeros are written a segment at a time (not after every group
		// that finds itself a block short), after a look at the space.
		if db.heap.Reach()+uint64(db.geom.SegmentBlocks) > target ||
			!db.roomForZeros(int64(zeroAheadSegments)*db.geom.SegmentBytes()) {
			continue
		}
		err := db.heap.ZeroAhead(ctx, target)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			db.logger.Warn("writing zeros ahead of the heap failed; pausing it", "pause", zeroPause, "err", err)
			pausedUntil = time.Now().Add(zeroPause)
		}
	}
}

// roomForZeros reports whether every heap replica's file system has n
// bytes free beyond the space reserve's size, so that zeros never take the
// space the reserve keeps for the operations that give space back.
func (db *DB) roomForZeros(n int64) bool {
	for _, st := range db.heap.Status() {
		du, err := db.rawFS.GetDiskUsage(db.rawFS.PathDir(st.Path))
		if err != nil || du.AvailBytes < uint64(n+max(db.opts.DiskReserve, 0)) {
			return false
		}
	}
	return true
}
