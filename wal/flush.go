package wal

import "fmt"

// Flushes. A record is durable once a flush of its segment returned after
// it was written: SyncTo flushes through a target LSN and nothing else,
// Sync flushes everything and updates the sync mark, SyncMark updates only
// the mark. All of them hold syncMu across their I/O, so they never overlap
// each other or a rotation, but they overlap Append (see "Concurrency" in
// the package documentation).

// SyncTo makes the records through target durable: it writes the
// buffered records first if target is among them (WriteBuffered), then
// flushes the current segment (an fdatasync: its blocks are preallocated)
// and raises SyncedLSN to target, even if the flush covered records
// appended after target meanwhile, since their data may not be durable
// yet. target must not be above the last appended LSN (NextLSN()-1); at or
// below SyncedLSN, SyncTo returns at once with no I/O. It neither calls
// Options.BeforeSync (the caller has made the data of the records through
// target durable) nor updates the sync mark (see SyncMark and "Sync mark"
// in the package documentation): a synced group costs one flush. It may
// run while Append writes. A failed write or flush poisons the Log.
func (l *Log) SyncTo(target LSN) error {
	l.mu.Lock()
	err := l.usableLocked()
	last := l.mu.next - 1
	l.mu.Unlock()
	switch {
	case err != nil:
		return err
	case target > last:
		return fmt.Errorf("wal: SyncTo(%d) past the last appended LSN %d", target, last)
	case target <= l.SyncedLSN():
		return nil
	}
	if err := l.writeThrough(target); err != nil {
		return err
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	cur, err := l.usableSegment()
	if err != nil || target <= l.SyncedLSN() {
		return err // a rotation meanwhile flushed target
	}
	return l.flush(cur, target, false)
}

// usableSegment returns the current segment, or why the Log cannot be
// used. REQUIRES: syncMu held (so the segment stays current), mu not held.
func (l *Log) usableSegment() (*segment, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.cur, l.usableLocked()
}

// SyncMark makes the sync mark file record SyncedLSN, if it records less
// (one small overwrite and fdatasync of the mark file; no I/O otherwise).
// A caller that syncs with SyncTo calls it when the log goes idle, so that
// the newest synced records are protected (see "Sync mark" in the package
// documentation) while nobody waits for the flush. A failed update poisons
// the Log.
func (l *Log) SyncMark() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	err := l.usableLocked()
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.syncMarkLocked()
}

// Sync makes every record appended so far durable: it writes the
// buffered records, calls Options.BeforeSync and flushes the current
// segment, as SyncTo(NextLSN()-1) would, then updates the sync mark as
// SyncMark does. It costs two flushes (segment and mark), none when
// nothing is unsynced or unmarked. It may be called from any goroutine at
// any time, also while Append is writing. A failed write, flush or mark
// update poisons the Log.
func (l *Log) Sync() error {
	l.mu.Lock()
	err := l.usableLocked()
	target := l.mu.next - 1
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if target > l.SyncedLSN() {
		if err := l.writeThrough(target); err != nil {
			return err
		}
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	cur, err := l.usableSegment()
	if err != nil {
		return err
	}
	if target > l.SyncedLSN() {
		if err := l.flush(cur, target, true); err != nil {
			return err
		}
	}
	return l.syncMarkLocked()
}

// flush makes the records of seg through target (all written: flush never
// writes the buffer, its callers do first) durable and
// raises the synced watermark to target, calling BeforeSync first if
// before. The flush is an fdatasync unless an Append has grown the file
// past its durable size: then it is a full fsync, which makes the new size
// durable too. A failure of the flush poisons the Log: after it, what is
// durable is unknown. REQUIRES: syncMu held, mu not held.
func (l *Log) flush(seg *segment, target LSN, before bool) error {
	if before {
		if err := l.opts.beforeSync(); err != nil {
			return err
		}
	}
	l.mu.Lock()
	end := seg.end
	full := end > seg.size
	l.mu.Unlock()
	var err error
	if full {
		err = seg.s.Sync()
	} else {
		err = seg.s.SyncData()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		return l.poisonLocked(fmt.Errorf("wal: sync %s: %w", seg.path, err))
	}
	l.mu.stats.Syncs++
	if full {
		seg.size = end
		l.mu.stats.FullSyncs++
	}
	if target > l.SyncedLSN() {
		l.synced.Store(uint64(target))
	}
	// Every append with a record through target has a durable record
	// carrying its stamp; the appends wholly through target are done.
	k := 0
	for _, st := range l.mu.stamps {
		if st.first > target {
			break
		}
		if uint64(st.stamp) > l.vouched.Load() {
			l.vouched.Store(uint64(st.stamp))
		}
		if st.last <= target {
			k++
		}
	}
	l.mu.stamps = append(l.mu.stamps[:0], l.mu.stamps[k:]...)
	if l.mu.err != nil { // a concurrent Append failed
		return fmt.Errorf("wal: log failed earlier: %w", l.mu.err)
	}
	return nil
}

// syncMarkLocked makes the sync mark record SyncedLSN if it is behind. A
// failed update poisons the Log, since whether the mark reached the disk
// is unknown. REQUIRES: syncMu held, mu not held.
func (l *Log) syncMarkLocked() error {
	target := l.SyncedLSN()
	if l.mark == nil || target <= l.mark.cur.lsn {
		return nil
	}
	err := l.mark.write(target)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		return l.poisonLocked(err)
	}
	l.markLSN.Store(uint64(target))
	l.mu.stats.MarkSyncs++
	return nil
}
