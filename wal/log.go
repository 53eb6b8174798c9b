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
	Segments int   // segment files on disk, the current one included
	Bytes    int64 // total size of those files in bytes (preallocated: SegmentSize each)

	Spares     int   // spare files ready to become segments (see spare.go)
	SpareBytes int64 // their total size in bytes

	// Syncs counts the flushes of the current segment that made records
	// durable (SyncTo, Sync, rotation, Close). Most are fdatasyncs of
	// preallocated blocks; FullSyncs counts those that were full fsyncs,
	// because an Append larger than a whole segment had grown the file.
	Syncs     uint64
	FullSyncs uint64

	// MarkSyncs counts the fdatasyncs of the sync mark file (Sync,
	// SyncMark, rotation, Close; Open's are not counted). With SyncTo and
	// SyncMark, most synced groups cost none.
	MarkSyncs uint64

	Appends         uint64 // Append calls that framed records
	BufferedAppends uint64 // AppendBuffered calls that framed records
	Records         uint64 // records framed by Append and AppendBuffered
	// Writes counts the write calls that put framed records into a
	// segment: one per Append, plus one per write of buffered records
	// that no Append took along (the size limit, WriteBuffered, a flush,
	// a rotation, Close).
	Writes uint64

	SparesPrepared   uint64 // spares zero-filled since Open (Open's own included)
	SegmentsRecycled uint64 // obsolete segments kept as spares: by RemoveThrough, or by Open (the empty segment it replaces)
}

// Log appends records to the current segment of a log directory, directly
// (Append) or through a buffer (AppendBuffered). Append and AppendBuffered
// are meant to be called by one goroutine at a time (calls are serialized,
// not interleaved); WriteBuffered, SyncTo, Sync, SyncMark, SyncedLSN,
// WrittenLSN, NextLSN and Stats may be called from any goroutine at any
// time.
//
// After a write or flush error the Log is poisoned: every later Append,
// SyncTo, Sync, SyncMark and Rotate returns that first error (wrapped), and
// the synced watermark never moves again, so nothing written after the
// failure is ever reported durable. Recover with Replay and a new Open.
type Log struct {
	opts Options // defaults filled in; never changes

	// removeMu serializes RemoveThrough (and Close against it).
	// Lock order: removeMu, appendMu, syncMu, mu.
	removeMu sync.Mutex

	// appendMu serializes the writers of the current segment: Append,
	// AppendBuffered, WriteBuffered (also when a flush calls it), Rotate
	// and Close. It is held across the segment write and across rotation,
	// and guards pend.
	appendMu sync.Mutex
	// pend holds the framed records not yet written, LSNs mu.written to
	// mu.next-1, salted for the current segment and due at its offset
	// end (see append.go); between writes it is empty, and its storage
	// is reused.
	pend []byte

	// syncMu serializes flushes of the current segment and of the sync
	// mark, and keeps the segment's sync handle open while a flush runs:
	// Rotate and Close take it before they close a segment. It is held
	// across the flush; mu is not.
	syncMu sync.Mutex

	// mark is the sync mark file (nil if Options.noSyncMark). It is written
	// only with syncMu held (or in Open and Close), after the segment flush
	// that made its LSN durable, so that it is always <= synced.
	mark *markFile
	// markLSN is what the mark file records; stored with syncMu held.
	markLSN atomic.Uint64

	// synced is the highest LSN known durable. It only grows, is stored with
	// syncMu held (or in Open) and read anywhere; Append stamps it into
	// every record it frames.
	synced atomic.Uint64

	// vouched is the highest synced stamp carried by a durable record: a
	// recovery that reads the log will find proof (wal.ProvenDurable) that
	// every record up to it was durable. It lags synced by one sync.
	vouched atomic.Uint64

	// closing is set when Close begins: a running spare preparation gives
	// up. prepWG counts the preparation goroutines (at most one).
	closing atomic.Bool
	prepWG  sync.WaitGroup

	// mu protects the following. It is never held across I/O.
	mu struct {
		sync.Mutex
		// cur is the current segment. It is replaced only with appendMu,
		// syncMu and mu all held, so a holder of appendMu or syncMu may read
		// the pointer without mu.
		cur *segment
		// next is the LSN the next record gets.
		next LSN
		// written is the LSN after the last record written: every record
		// below it has been written in full (its write returned); the
		// records from written to next-1 wait in pend. Changed only with
		// appendMu held.
		written LSN
		// segs lists the segment files on disk, oldest first; the last one
		// is cur.
		segs []segmentInfo
		// stamps lists, for each Append not yet known durable, its LSNs
		// and the synced stamp its records carry (ascending).
		stamps []appendStamp
		// err is the first write or sync error; once set the Log is poisoned.
		err    error
		closed bool
		stats  Stats // the counters; Segments, Bytes, Spares, SpareBytes are computed

		spareState // see spare.go
	}
}

// segment is the open current segment. Writes go through w and flushes
// through s: a vfs.File allows only one write or sync at a time, and a
// flush covers the file, not the descriptor, so two handles let SyncTo run
// while Append writes. (The FS must make a sync on one handle cover writes
// made through another handle of the same file, as OS files and MemFS do.)
type segment struct {
	first LSN
	path  string
	salt  uint64 // every record of this segment carries it
	start int64  // offset of the first record: the header size
	w     vfs.File
	s     vfs.File

	// Protected by Log.mu; changed only with appendMu (end) or syncMu
	// (size) held as well.
	end  int64 // offset after the last record written
	size int64 // file size known durable: preallocated, or covered by a full Sync
}

// fileSize returns the size of the segment file. REQUIRES: Log.mu held.
func (s *segment) fileSize() int64 { return max(s.size, s.end) }

// segmentInfo describes one segment file on disk.
type segmentInfo struct {
	first LSN
	path  string
	size  int64 // file size (for cur, see segment.fileSize)
}

// Open starts a new segment whose first LSN is next (pass the last LSN
// returned by Replay plus 1), writes and syncs its header, syncs the
// directory and returns a Log ready to append. Dir is created if absent.
// An existing segment named for next (an empty or torn one that Replay
// ended in) is replaced, and recycled as the new segment's spare if it was
// preallocated (see recycleReplaced); a segment starting after next is an
// error.
//
// The new segment is a spare file (a recycled segment, or one a Log
// prepared ahead) if the directory holds one; otherwise Open zero-fills a
// new file of SegmentSize bytes first. Spare files of the wrong size and
// leftovers of interrupted preparations are deleted.
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
	var replaced *segmentFile
	for _, s := range found {
		if s.first > next {
			return nil, fmt.Errorf("wal: Open(%d): segment %s holds later LSNs; pass Replay's last LSN + 1", next, s.path)
		}
		if s.first == next {
			replaced = &s // replaced below
			continue
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
	spares, lastID, err := adoptSpares(o)
	if err != nil {
		return nil, err
	}
	recycled := uint64(0)
	if replaced != nil {
		sp, ok, err := recycleReplaced(o, *replaced, lastID+1)
		if err != nil {
			return nil, err
		}
		if ok {
			spares, lastID, recycled = append(spares, sp), lastID+1, 1
		}
	}
	if len(segs) > 0 {
		if err := o.beforeSync(); err != nil {
			return nil, err
		}
		if err := syncFile(o.FS, segs[len(segs)-1].path); err != nil {
			return nil, err
		}
	}
	var sp spareFile
	prepared := uint64(0)
	if n := len(spares); n > 0 {
		sp, spares = spares[n-1], spares[:n-1]
	} else {
		lastID++
		sp = spareFile{path: o.FS.PathJoin(o.Dir, SpareName(lastID)), size: o.SegmentSize}
		if err := prepareSpare(o, sp, nil); err != nil {
			return nil, err
		}
		prepared++
	}
	seg, err := installSpare(o, sp, next)
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
	if mf != nil {
		l.markLSN.Store(uint64(mf.cur.lsn))
	}
	l.mu.cur = seg
	l.mu.next = next
	l.mu.written = next
	l.mu.segs = append(segs, segmentInfo{first: next, path: seg.path, size: seg.size})
	l.mu.spares = spares
	l.mu.spareID = lastID
	l.mu.stats.SparesPrepared = prepared
	l.mu.stats.SegmentsRecycled = recycled
	return l, nil
}

// recycleReplaced turns the segment s that Open replaces (the one named for
// its next LSN, which holds no record of the log) into spare number id, if
// it is a preallocated segment: SegmentSize bytes with a format 1 header,
// so every block of it was written and synced when it was a spare. Then
// Open installs the new segment in it, as in any recycled spare, and a
// database that is opened and closed without writes zero-fills nothing.
// The rename is made durable before Open rewrites the header (see
// spare.go). ok is false for any other file, which the new segment
// replaces as before.
func recycleReplaced(o Options, s segmentFile, id uint64) (sp spareFile, ok bool, err error) {
	st, err := o.FS.Stat(s.path)
	if err != nil {
		return spareFile{}, false, fmt.Errorf("wal: stat %s: %w", s.path, err)
	}
	if st.Size() != o.SegmentSize {
		return spareFile{}, false, nil
	}
	b, err := readPrefix(o.FS, s.path, SaltedSegmentHeaderSize)
	if err != nil {
		return spareFile{}, false, err
	}
	if h, err := checkSegmentHeader(b, o.DBID, s.path, s.first); err != nil || !h.salted() {
		return spareFile{}, false, nil
	}
	sp = spareFile{path: o.FS.PathJoin(o.Dir, SpareName(id)), size: st.Size()}
	if err := o.FS.Rename(s.path, sp.path); err != nil {
		return spareFile{}, false, fmt.Errorf("wal: rename %s to spare %s: %w", s.path, sp.path, err)
	}
	if err := vfsutil.SyncDir(o.FS, o.Dir); err != nil {
		return spareFile{}, false, err
	}
	return sp, true, nil
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

// MarkLSN returns the LSN the sync mark file records (0 without one):
// after a crash, ProvenDurable will be at least this, and damage to a
// record at or below it is reported as corruption. It is at most
// SyncedLSN; Sync, SyncMark, rotation and Close bring it up to SyncedLSN,
// SyncTo leaves it behind.
func (l *Log) MarkLSN() LSN { return LSN(l.markLSN.Load()) }

// Stats returns the Log's counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.mu.stats
	s.Segments = len(l.mu.segs)
	for _, seg := range l.mu.segs[:len(l.mu.segs)-1] {
		s.Bytes += seg.size
	}
	s.Bytes += l.mu.cur.fileSize()
	s.Spares = len(l.mu.spares)
	for _, sp := range l.mu.spares {
		s.SpareBytes += sp.size
	}
	return s
}

// Close writes the buffered records, flushes the current segment and
// updates the sync mark, as Sync does (unless the Log is poisoned, in
// which case it returns the failure), stops a spare preparation in
// progress, and closes the files. Spares stay on disk for the next Open.
// Later calls return ErrClosed.
func (l *Log) Close() error {
	l.removeMu.Lock()
	defer l.removeMu.Unlock()
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	// A failure poisons the Log, which the check below reports.
	_ = l.writePendingLocked()
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
	l.closing.Store(true)
	if err == nil && target > l.SyncedLSN() {
		err = l.flush(cur, target, true)
	}
	if err == nil {
		err = l.syncMarkLocked()
	}
	l.prepWG.Wait()
	err = errors.Join(err, cur.close(), l.mark.close())
	l.mu.Lock()
	l.mu.closed = true
	l.mu.Unlock()
	return err
}
