package wal

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// writeCategory tags the log's writes for vfs implementations that account
// disk writes by category.
const writeCategory vfs.DiskWriteCategory = "heapkv-wal"

// maxRetainedBuf bounds the framing buffer a Log keeps between Appends.
const maxRetainedBuf = 1 << 20

// Stats are counters of a Log since Open.
type Stats struct {
	Segments int    // segment files on disk, the current one included
	Bytes    int64  // total size of those files in bytes
	Syncs    uint64 // fsyncs that made records durable (Sync, Rotate, Close)
	Appends  uint64 // Append calls that wrote records
	Records  uint64 // records written by Append

	// MarkSyncs counts the fdatasyncs of the sync mark file that followed
	// those fsyncs (one each, unless the mark is off); Open's are not
	// counted.
	MarkSyncs uint64
}

// Log appends records to the current segment of a log directory. Append is
// meant to be called by one goroutine at a time (calls are serialized, not
// interleaved); Sync, SyncedLSN, NextLSN and Stats may be called from any
// goroutine at any time.
//
// After a write or sync error the Log is poisoned: every later Append, Sync
// and Rotate returns that first error (wrapped), and the synced watermark
// never moves again, so nothing written after the failure is ever reported
// durable. Recover with Replay and a new Open.
type Log struct {
	opts Options // defaults filled in; never changes

	// removeMu serializes RemoveThrough (and Close against it).
	// Lock order: removeMu, appendMu, syncMu, mu.
	removeMu sync.Mutex

	// appendMu serializes the writers of the current segment: Append,
	// Rotate and Close. It is held across the segment Write and across
	// rotation, and guards buf.
	appendMu sync.Mutex
	buf      []byte // framing buffer, reused between Appends

	// syncMu serializes fsyncs of the current segment and keeps its sync
	// handle open while an fsync runs: Rotate and Close take it before they
	// close a segment. It is held across the fsync; mu is not.
	syncMu sync.Mutex

	// mark is the sync mark file (nil if Options.noSyncMark). It is written
	// only with syncMu held (or in Open and Close), after the segment fsync
	// and before synced is raised, so that it is always >= synced.
	mark *markFile

	// synced is the highest LSN known durable. It only grows, is stored with
	// syncMu held (or in Open) and read anywhere; Append stamps it into
	// every record it frames.
	synced atomic.Uint64

	// vouched is the highest synced stamp carried by a durable record: a
	// recovery that reads the log will find proof (wal.ProvenDurable) that
	// every record up to it was durable. It lags synced by one sync.
	vouched atomic.Uint64

	// mu protects the following. It is never held across I/O.
	mu struct {
		sync.Mutex
		// cur is the current segment. It is replaced only with appendMu,
		// syncMu and mu all held, so a holder of appendMu or syncMu may read
		// the pointer without mu.
		cur *segment
		// next is the LSN the next record gets; every record below it has
		// been written in full (its Write returned).
		next LSN
		// segs lists the segment files on disk, oldest first; the last one
		// is cur.
		segs []segmentInfo
		// stamps lists, for each Append not yet known durable, its last
		// LSN and the synced stamp its records carry (ascending).
		stamps []appendStamp
		// err is the first write or sync error; once set the Log is poisoned.
		err    error
		closed bool
		stats  Stats // Syncs, Appends, Records; the rest is computed
	}
}

// segment is the open current segment. Writes go through w and fsyncs
// through s: a vfs.File allows only one Write or Sync at a time, and an
// fsync covers the file, not the descriptor, so two handles let Sync run
// while Append writes. (The FS must make Sync on one handle cover writes
// made through another handle of the same file, as OS files and MemFS do.)
type segment struct {
	first LSN
	path  string
	w     vfs.File // write handle; used only with appendMu held
	s     vfs.File // sync handle; used only with syncMu held
}

// segmentInfo describes one segment file on disk.
type segmentInfo struct {
	first LSN
	path  string
	size  int64
}

// Open starts a new segment whose first LSN is next (pass the last LSN
// returned by Replay plus 1), writes and syncs its header, syncs the
// directory and returns a Log ready to append. Dir is created if absent.
// An existing segment named for next (an empty or torn one that Replay
// ended in) is replaced; a segment starting after next is an error.
//
// Open first fsyncs the newest older segment, so that the records Replay
// returned are durable before any new record claims (through its synced
// LSN) that they are. Callers must not make the effects of replayed records
// durable elsewhere before Open returns. Once the new segment exists, Open
// makes the sync mark file (SyncMarkName) record next-1, creating the file
// if the log has none. A sync mark above next-1 means the caller would cut
// off records known durable: Open refuses it without changing anything.
func Open(opts Options, next LSN) (*Log, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if next == InvalidLSN {
		return nil, errors.New("wal: Open with next LSN 0 (the first LSN is 1)")
	}
	if err := ensureDir(o); err != nil {
		return nil, err
	}
	found, err := listSegments(o)
	if err != nil {
		return nil, err
	}
	var segs []segmentInfo
	for _, s := range found {
		if s.first > next {
			return nil, fmt.Errorf("wal: Open(%d): segment %s holds later LSNs; pass Replay's last LSN + 1", next, s.path)
		}
		if s.first == next {
			continue // replaced below
		}
		st, err := o.FS.Stat(s.path)
		if err != nil {
			return nil, fmt.Errorf("wal: stat %s: %w", s.path, err)
		}
		segs = append(segs, segmentInfo{first: s.first, path: s.path, size: st.Size()})
	}
	mark, markFound, err := readSyncMark(o)
	if err != nil {
		return nil, err
	}
	if mark.lsn > next-1 {
		return nil, fmt.Errorf("wal: Open(%d): sync mark %s says LSNs through %d are durable; pass Replay's last LSN + 1",
			next, o.FS.PathJoin(o.Dir, SyncMarkName), mark.lsn)
	}
	if len(segs) > 0 {
		if err := o.beforeSync(); err != nil {
			return nil, err
		}
		if err := syncFile(o.FS, segs[len(segs)-1].path); err != nil {
			return nil, err
		}
	}
	seg, err := createSegment(o, next)
	if err != nil {
		return nil, err
	}
	// Everything through next-1 is durable now (see above), and the new
	// segment shows that the log reaches next-1 even if it stays empty.
	var mf *markFile
	if !o.noSyncMark {
		if mf, err = openMarkFile(o, mark, markFound, next-1); err != nil {
			_ = seg.close() // the mark error is the one to report
			return nil, err
		}
	}
	l := &Log{opts: o, mark: mf}
	l.synced.Store(uint64(next - 1))
	l.mu.cur = seg
	l.mu.next = next
	l.mu.segs = append(segs, segmentInfo{first: next, path: seg.path, size: SegmentHeaderSize})
	return l, nil
}

// ensureDir creates the log directory if it does not exist, and makes the
// new directory entries durable by syncing the parent of each one created.
func ensureDir(o Options) error {
	var created []string
	for d := o.Dir; ; {
		_, err := o.FS.Stat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("wal: stat %s: %w", d, err)
		}
		created = append(created, d)
		parent := o.FS.PathDir(d)
		if parent == d {
			break
		}
		d = parent
	}
	if len(created) == 0 {
		return nil
	}
	if err := o.FS.MkdirAll(o.Dir, 0o755); err != nil {
		return fmt.Errorf("wal: create %s: %w", o.Dir, err)
	}
	for i := len(created) - 1; i >= 0; i-- {
		if err := vfsutil.SyncDir(o.FS, o.FS.PathDir(created[i])); err != nil {
			return err
		}
	}
	return nil
}

// syncFile fsyncs an existing file.
func syncFile(fsys vfs.FS, path string) error {
	f, err := fsys.OpenReadWrite(path, writeCategory)
	if err != nil {
		return fmt.Errorf("wal: open %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wal: sync %s: %w", path, err)
	}
	return nil
}

// createSegment creates the segment file for first, writes and syncs its
// header and syncs the directory.
func createSegment(o Options, first LSN) (*segment, error) {
	path := o.FS.PathJoin(o.Dir, SegmentName(first))
	seg := &segment{first: first, path: path}
	if err := seg.create(o); err != nil {
		_ = seg.close() // the error above is the one to report
		return nil, err
	}
	return seg, nil
}

func (s *segment) create(o Options) (err error) {
	if s.w, err = o.FS.Create(s.path, writeCategory); err != nil {
		return fmt.Errorf("wal: create %s: %w", s.path, err)
	}
	if s.s, err = o.FS.OpenReadWrite(s.path, writeCategory); err != nil {
		return fmt.Errorf("wal: open %s: %w", s.path, err)
	}
	if _, err = s.w.Write(encodeSegmentHeader(o.DBID, s.first)); err != nil {
		return fmt.Errorf("wal: write header of %s: %w", s.path, err)
	}
	if err = s.s.Sync(); err != nil {
		return fmt.Errorf("wal: sync %s: %w", s.path, err)
	}
	return vfsutil.SyncDir(o.FS, o.Dir)
}

// close closes both handles of a segment.
func (s *segment) close() error {
	var errs []error
	for _, f := range []vfs.File{s.w, s.s} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	s.w, s.s = nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wal: close %s: %w", s.path, err)
	}
	return nil
}

// usableLocked returns ErrClosed or the poison error, if any.
// REQUIRES: l.mu held.
func (l *Log) usableLocked() error {
	if l.mu.closed {
		return ErrClosed
	}
	if l.mu.err != nil {
		return fmt.Errorf("wal: log failed earlier: %w", l.mu.err)
	}
	return nil
}

// poisonLocked records err as the Log's failure unless one is recorded
// already, and returns the first failure. REQUIRES: l.mu held.
func (l *Log) poisonLocked(err error) error {
	if l.mu.err == nil {
		l.mu.err = err
		l.opts.Logger.Error(fmt.Sprintf("wal: log failed, no further writes: %v", err))
		return err
	}
	return fmt.Errorf("wal: log failed earlier: %w", l.mu.err)
}

// NextLSN returns the LSN the next appended record will get.
func (l *Log) NextLSN() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.next
}

// SyncedLSN returns the highest LSN known durable: every record up to it
// survives a crash.
func (l *Log) SyncedLSN() LSN { return LSN(l.synced.Load()) }

// VouchedLSN returns the highest LSN that a durable record's synced stamp
// vouches for: after a crash, ProvenDurable will be at least this. It lags
// SyncedLSN by one sync: the records appended after a sync carry its LSN,
// and vouch for it once they are synced themselves. Callers that must not
// let a recovery mistake a durable record for a torn tail (heapkv reuses
// freed heap blocks only below it) use this rather than SyncedLSN.
func (l *Log) VouchedLSN() LSN { return LSN(l.vouched.Load()) }

// appendStamp is what one Append vouches for once it is durable.
type appendStamp struct {
	last  LSN // last LSN of the append
	stamp LSN // the synced stamp its records carry
}

// Append frames payloads as records with consecutive LSNs starting at
// NextLSN() and writes them with one Write call on the current segment,
// first rotating to a new segment if the current one is over SegmentSize.
// It returns the first record's LSN (NextLSN() and no write if payloads is
// empty). The records are not durable until Sync returns. Append does not
// keep payloads. Calls must not overlap each other (the caller's commit
// leader serializes them); they may overlap Sync.
func (l *Log) Append(payloads [][]byte) (first LSN, err error) {
	for i, p := range payloads {
		if len(p) > MaxPayloadSize {
			return 0, fmt.Errorf("%w: payload %d has %d bytes, max %d", ErrRecordTooLarge, i, len(p), MaxPayloadSize)
		}
	}
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.mu.Lock()
	err = l.usableLocked()
	first = l.mu.next
	full := l.mu.segs[len(l.mu.segs)-1].size > l.opts.SegmentSize
	l.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if len(payloads) == 0 {
		return first, nil
	}
	if full {
		if err := l.rotate(); err != nil {
			return 0, err
		}
	}
	synced := LSN(l.synced.Load())
	buf := l.buf[:0]
	for i, p := range payloads {
		buf = AppendRecord(buf, first+LSN(i), synced, p)
	}
	if cap(buf) <= maxRetainedBuf {
		l.buf = buf
	}
	cur := l.mu.cur // appendMu held: cur cannot change
	n, werr := cur.w.Write(buf)

	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.segs[len(l.mu.segs)-1].size += int64(n)
	if werr != nil {
		return 0, l.poisonLocked(fmt.Errorf("wal: write %s at LSN %d: %w", cur.path, first, werr))
	}
	l.mu.next += LSN(len(payloads))
	l.mu.stamps = append(l.mu.stamps, appendStamp{last: l.mu.next - 1, stamp: synced})
	l.mu.stats.Appends++
	l.mu.stats.Records += uint64(len(payloads))
	if l.mu.err != nil { // a concurrent Sync failed: do not report success
		return 0, fmt.Errorf("wal: log failed earlier: %w", l.mu.err)
	}
	return first, nil
}

// Sync makes every record appended so far durable by fsyncing the current
// segment, records the new synced LSN in the sync mark file (a small
// overwrite and fdatasync), then raises SyncedLSN. It may be called from
// any goroutine at any time, also while Append is writing; it returns at
// once, with no I/O, when nothing is unsynced. A failed fsync or mark
// update poisons the Log.
func (l *Log) Sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	err := l.usableLocked()
	target, cur := l.mu.next-1, l.mu.cur
	l.mu.Unlock()
	if err != nil || target <= l.SyncedLSN() {
		return err
	}
	return l.syncCurrent(cur, target)
}

// syncCurrent calls BeforeSync, fsyncs seg, whose records through target
// are written, makes the sync mark record target (one more small write
// and fdatasync) and raises the synced watermark to target. A failure of
// the fsync or of the mark update poisons the Log: after either, what is
// durable is unknown. REQUIRES: syncMu held, mu not held.
func (l *Log) syncCurrent(seg *segment, target LSN) error {
	if err := l.opts.beforeSync(); err != nil {
		return err
	}
	marked := false
	err := seg.s.Sync()
	if err != nil {
		err = fmt.Errorf("wal: sync %s: %w", seg.path, err)
	} else if l.mark != nil {
		// The records through target are durable: the mark may say so.
		err = l.mark.write(target)
		marked = err == nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		return l.poisonLocked(err)
	}
	if marked {
		l.mu.stats.MarkSyncs++
	}
	if target > l.SyncedLSN() {
		l.synced.Store(uint64(target))
	}
	// The appends through target are durable, and so are the stamps
	// their records carry.
	k := 0
	for k < len(l.mu.stamps) && l.mu.stamps[k].last <= target {
		if st := uint64(l.mu.stamps[k].stamp); st > l.vouched.Load() {
			l.vouched.Store(st)
		}
		k++
	}
	l.mu.stamps = append(l.mu.stamps[:0], l.mu.stamps[k:]...)
	l.mu.stats.Syncs++
	if l.mu.err != nil { // a concurrent Append failed
		return fmt.Errorf("wal: log failed earlier: %w", l.mu.err)
	}
	return nil
}

// Rotate syncs the current segment (and updates the sync mark, as Sync
// does) and starts a new one at NextLSN(). It does nothing if the current
// segment holds no records.
func (l *Log) Rotate() error {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	return l.rotate()
}

// rotate syncs the current segment and starts a new one. A failure poisons
// the Log: a half-made segment must not be followed by more records in the
// old one. REQUIRES: appendMu held.
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
		if err := l.syncCurrent(old, next-1); err != nil {
			return err
		}
	}
	seg, err := createSegment(l.opts, next)
	l.mu.Lock()
	if err != nil {
		err = l.poisonLocked(err)
		l.mu.Unlock()
		return err
	}
	l.mu.cur = seg
	l.mu.segs = append(l.mu.segs, segmentInfo{first: next, path: seg.path, size: SegmentHeaderSize})
	l.mu.Unlock()
	if err := old.close(); err != nil {
		// The old segment is synced; a failed close loses nothing.
		l.opts.Logger.Warn(err.Error())
	}
	return nil
}

// RemoveThrough deletes the segments all of whose records have LSNs <= lsn
// (typically after a checkpoint at lsn), oldest first, then syncs the
// directory. The current segment is never deleted. It may run concurrently
// with Append and Sync.
func (l *Log) RemoveThrough(lsn LSN) error {
	l.removeMu.Lock()
	defer l.removeMu.Unlock()
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	var victims []segmentInfo
	for i := 0; i+1 < len(l.mu.segs) && l.mu.segs[i+1].first-1 <= lsn; i++ {
		victims = append(victims, l.mu.segs[i])
	}
	l.mu.Unlock()

	removed := 0
	var err error
	for _, v := range victims {
		if err = l.opts.FS.Remove(v.path); err != nil {
			err = fmt.Errorf("wal: remove %s: %w", v.path, err)
			break
		}
		removed++
	}
	if removed > 0 {
		// Only RemoveThrough shortens segs, so the removed ones are still
		// its prefix.
		l.mu.Lock()
		l.mu.segs = append([]segmentInfo(nil), l.mu.segs[removed:]...)
		l.mu.Unlock()
		err = errors.Join(err, vfsutil.SyncDir(l.opts.FS, l.opts.Dir))
	}
	return err
}

// Stats returns the Log's counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.mu.stats
	s.Segments = len(l.mu.segs)
	for _, seg := range l.mu.segs {
		s.Bytes += seg.size
	}
	return s
}

// Close syncs the current segment and updates the sync mark, as Sync does
// (unless the Log is poisoned, in which case it returns the failure), and
// closes both files. Later calls return ErrClosed.
func (l *Log) Close() error {
	l.removeMu.Lock()
	defer l.removeMu.Unlock()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	err := l.usableLocked()
	cur, target := l.mu.cur, l.mu.next-1
	l.mu.Unlock()
	if err == nil && target > l.SyncedLSN() {
		err = l.syncCurrent(cur, target)
	}
	err = errors.Join(err, cur.close(), l.mark.close())
	l.mu.Lock()
	l.mu.closed = true
	l.mu.Unlock()
	return err
}
