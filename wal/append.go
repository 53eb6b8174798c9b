package wal

import "fmt"

// Appending. Records are framed into the Log's pending buffer (pend) and
// written from it into the current segment at its end offset:
//
//	segment:  header | records written (start..end) | pend, not yet written | zeros or stale frames
//	LSNs:              ... mu.written-1               mu.written .. mu.next-1
//
// Append frames its records behind whatever AppendBuffered left in the
// buffer and writes the whole buffer with one write call, so a synced
// caller's group takes the buffered records along. AppendBuffered only
// frames, and writes the buffer once it holds Options.BufferSize bytes.
// Every record in the buffer carries the salt of the current segment and
// fits in it: a record that would not is preceded by a write of the
// buffer into the current segment and a rotation. Flushes (SyncTo, Sync),
// Rotate and Close write the buffer first when it holds a record they must
// cover (WriteBuffered). A process crash loses what the buffer holds;
// whatever was written stays with the operating system (see "Durability"
// in the package documentation).

// appendStamp is what one Append vouches for once it is durable.
type appendStamp struct {
	first, last LSN // LSNs of the append
	stamp       LSN // the synced stamp its records carry
}

// Append frames payloads as records with consecutive LSNs starting at
// NextLSN() and writes them, behind the records AppendBuffered left
// unwritten, with one write call into the current segment, first
// rotating to a new segment if they do not fit in the rest of the current
// one (unless it holds no record yet: an Append larger than a whole
// segment extends its segment). Buffered records that would then have to
// move are written into the current segment before the rotation. It
// returns the first record's LSN (NextLSN() and no write if payloads is
// empty). The records are not durable until SyncTo or Sync returns.
// Append does not keep payloads. Calls must not overlap each other or
// AppendBuffered (the caller's commit leader serializes them); they may
// overlap SyncTo, Sync, SyncMark and WriteBuffered, and neither waits for
// the other's I/O (a rotation waits for a flush in progress, a flush for
// a write of the buffer).
func (l *Log) Append(payloads [][]byte) (first LSN, err error) {
	return l.appendRecords(payloads, true)
}

// AppendBuffered frames payloads as Append does, with consecutive LSNs
// starting at NextLSN(), but leaves them in the Log's buffer instead of
// writing them, unless the buffer then holds Options.BufferSize bytes or
// more: then it writes the whole buffer with one write call. It returns
// the first record's LSN. The buffered records are written by the next
// Append (with its own records, in one write), WriteBuffered, a SyncTo or
// Sync that must cover them, Rotate, a rotation or Close. Until then a
// process crash loses them (and, by the order of LSNs, nothing before
// them). AppendBuffered does not keep payloads. Calls are serialized with
// Append, as Append's are.
func (l *Log) AppendBuffered(payloads [][]byte) (first LSN, err error) {
	return l.appendRecords(payloads, false)
}

// WriteBuffered writes the records that AppendBuffered left in the buffer
// with one write call, if there are any. It may be called from any
// goroutine at any time; it waits for an Append or a rotation in
// progress. A failed write poisons the Log.
func (l *Log) WriteBuffered() error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.writePendingLocked()
}

// WrittenLSN returns the last LSN written to a segment: the records above
// it, through NextLSN()-1, are in the buffer (AppendBuffered).
func (l *Log) WrittenLSN() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.written - 1
}

// appendRecords frames payloads into the buffer (rotating first if they
// do not fit in the current segment behind it) and writes the buffer if
// write is set or it has reached Options.BufferSize.
func (l *Log) appendRecords(payloads [][]byte, write bool) (first LSN, err error) {
	for i, p := range payloads {
		if len(p) > MaxPayloadSize {
			return 0, fmt.Errorf("%w: payload %d has %d bytes, max %d", ErrRecordTooLarge, i, len(p), MaxPayloadSize)
		}
	}
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.mu.Lock()
	err = l.usableLocked()
	first, cur := l.mu.next, l.mu.cur
	tail, size := cur.end+int64(len(l.pend)), cur.fileSize()
	l.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if len(payloads) == 0 {
		return first, nil
	}
	if tail+saltedSize(payloads) > size && tail > cur.start {
		// The buffer is salted for this segment and fits in it: it goes
		// there, the new records into the next segment.
		if err := l.writePendingLocked(); err != nil {
			return 0, err
		}
		if err := l.rotate(); err != nil {
			return 0, err
		}
		cur = l.mu.cur // appendMu held: cur cannot change
	}
	synced := LSN(l.synced.Load())
	for i, p := range payloads {
		l.pend = AppendSaltedRecord(l.pend, cur.salt, first+LSN(i), synced, p)
	}
	l.mu.Lock()
	l.mu.next += LSN(len(payloads))
	l.mu.stamps = append(l.mu.stamps, appendStamp{first: first, last: l.mu.next - 1, stamp: synced})
	if write {
		l.mu.stats.Appends++
	} else {
		l.mu.stats.BufferedAppends++
	}
	l.mu.stats.Records += uint64(len(payloads))
	l.mu.Unlock()
	if write || len(l.pend) >= l.opts.BufferSize {
		if err := l.writePendingLocked(); err != nil {
			return 0, err
		}
	}
	return first, nil
}

// writePendingLocked writes the buffer, if it holds records, at the end of
// the current segment with one write call. A failed write poisons the Log:
// the records may be partly on disk, and their LSNs were given out.
// REQUIRES: appendMu held; syncMu and mu not held.
func (l *Log) writePendingLocked() error {
	if len(l.pend) == 0 {
		return nil
	}
	l.mu.Lock()
	err := l.usableLocked()
	cur, first, next := l.mu.cur, l.mu.written, l.mu.next
	end := cur.end
	l.mu.Unlock()
	if err != nil {
		return err
	}
	n, werr := cur.w.WriteAt(l.pend, end)

	l.mu.Lock()
	cur.end = end + int64(n)
	if werr != nil {
		err = l.poisonLocked(fmt.Errorf("wal: write %s at LSN %d (offset %d): %w", cur.path, first, end, werr))
		l.mu.Unlock()
		return err
	}
	l.mu.written = next // appendMu held: next has not moved
	l.mu.stats.Writes++
	prep := l.startPrepareLocked(cur)
	err = l.mu.err // a concurrent flush failed: do not report success
	l.mu.Unlock()
	if cap(l.pend) <= maxRetainedBuf {
		l.pend = l.pend[:0]
	} else {
		l.pend = nil
	}
	if prep != nil {
		prep()
	}
	if err != nil {
		return fmt.Errorf("wal: log failed earlier: %w", err)
	}
	return nil
}

// writeThrough makes sure the records through target are written: if
// target is in the buffer, it writes the buffer. Flushes call it before
// they take syncMu. REQUIRES: appendMu, syncMu and mu not held.
func (l *Log) writeThrough(target LSN) error {
	l.mu.Lock()
	written := l.mu.written
	l.mu.Unlock()
	if target < written {
		return nil
	}
	return l.WriteBuffered()
}

// Rotate writes the buffered records, flushes the current segment
// (calling BeforeSync first), updates the sync mark, as Sync does, and
// starts a new segment at NextLSN(). It does nothing more if the current
// segment holds no records.
func (l *Log) Rotate() error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	if err := l.writePendingLocked(); err != nil {
		return err
	}
	return l.rotate()
}

// RotateIfSpare is Rotate when a spare is ready in the pool, and nothing
// otherwise: it never prepares a spare or waits for a preparation, so it
// holds appendMu for a flush, a mark update and a header write at most.
// It reports whether it rotated. A background checkpoint uses it: a
// segment that goes on past the checkpoint only stays on disk until the
// next one (RemoveThrough keeps the segment holding lsn+1).
func (l *Log) RotateIfSpare() (bool, error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.mu.Lock()
	ready := len(l.mu.spares) > 0 // only rotate takes spares, under appendMu
	l.mu.Unlock()
	if !ready {
		return false, nil
	}
	if err := l.writePendingLocked(); err != nil {
		return false, err
	}
	return true, l.rotate()
}

// rotate flushes the current segment, brings the mark up to date and
// starts a new segment in a spare file (see spare.go). A failure poisons
// the Log: a half-made segment must not be followed by more records in the
// old one. REQUIRES: appendMu held, the buffer empty (written into the
// current segment).
func (l *Log) rotate() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	err := l.usableLocked()
	old, next := l.mu.cur, l.mu.next
	l.mu.Unlock()
	if err != nil || old.first == next {
		return err
	}
	if next-1 > l.SyncedLSN() {
		if err := l.flush(old, next-1, true); err != nil {
			return err
		}
	}
	if err := l.syncMarkLocked(); err != nil {
		return err
	}
	sp, err := l.takeSpare()
	var seg *segment
	if err == nil {
		seg, err = installSpare(l.opts, sp, next)
	}
	l.mu.Lock()
	if err != nil {
		err = l.poisonLocked(err)
		l.mu.Unlock()
		return err
	}
	l.mu.segs[len(l.mu.segs)-1].size = old.fileSize()
	l.mu.cur = seg
	l.mu.segs = append(l.mu.segs, segmentInfo{first: next, path: seg.path, size: seg.size})
	l.mu.prepFailed = false
	l.mu.Unlock()
	if err := old.close(); err != nil {
		// The old segment is synced; a failed close loses nothing.
		l.opts.Logger.Warn(err.Error())
	}
	return nil
}
