package wal

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync/atomic"

	"github.com/heapkv/heapkv/internal/vfsutil"
)

// Spare files. Every segment starts as a spare: a file named
// "<number, 20 decimal digits>.spare" in the log directory (SpareName),
// SegmentSize bytes long, every byte of it written and synced. Writing
// records into such a file overwrites allocated, initialized blocks, so
// an fdatasync makes them durable without committing file system
// metadata: a synced group costs one device flush. (A preallocated but
// unwritten extent would not do: on ext4 its first write converts the
// extent, which is a metadata change.)
//
// A spare comes from one of two places:
//   - preparation: a new file zero-filled to SegmentSize, written as
//     "<n>.spare.tmp" one zeroChunk at a time, each chunk written back
//     before the next (see zeroChunk), fsynced and renamed. The Log
//     prepares one in a background goroutine when the pool is empty and
//     the current segment passes half full, so that the next rotation
//     finds it ready; Open,
//     and a rotation that finds the pool empty and no preparation running
//     (Rotate before half full), prepare one inline.
//   - recycling: RemoveThrough renames an obsolete segment of exactly
//     SegmentSize bytes to a spare name instead of deleting it, while the
//     pool holds fewer than Options.SpareSegments spares, and syncs the
//     directory before the spare can be used. Its old records stay in it;
//     the salt of its next use tells them apart (see frame.go). Open
//     recycles the same way the segment it replaces, the one named for
//     its first LSN (recycleReplaced), which holds no record of the log:
//     a log closed after a checkpoint ends in such a segment, so opening
//     it again takes no preparation.
//
// So the pool holds at most max(SpareSegments, 1) spares, plus one when a
// preparation that started on an empty pool ends after a RemoveThrough
// refilled it. (The segment Open recycles is taken at once.)
//
// A rotation (installSpare) writes the new segment header, with a new
// salt, into the spare, fdatasyncs it, renames it to the segment's name
// and syncs the directory: a rename and a header write, no zero-filling.
// The header is durable before the name, so a crash leaves either a spare
// (any header: Replay never reads spares, and the header is rewritten at
// its next use) or a segment with its own header. A recycled spare's own
// name must be durable before its header is rewritten, or a crash could
// bring back the segment name it had before recycling on a file whose
// header names another LSN: RemoveThrough and Open sync the directory
// first. (A fresh spare's name need not be: what a crash can bring back is
// its temporary name, which Open deletes.)
//
// Open adopts the spares it finds (a process that closed, or crashed,
// leaves its pool on disk) and deletes "*.spare.tmp" leftovers and spares
// of another size. Replay, ProvenDurable and SyncAll ignore spare files.

// spareFile is a spare ready to become a segment.
type spareFile struct {
	path string
	size int64
}

// spareState is the spare pool of a Log, protected by Log.mu.
type spareState struct {
	spares  []spareFile // ready; the newest (used first) last
	spareID uint64      // the highest spare number in use or seen
	// preparing is non-nil while a background preparation runs; it is
	// closed when the preparation ends.
	preparing chan struct{}
	// prepFailed stops further background preparations until the next
	// rotation (which then prepares inline, reporting the error).
	prepFailed bool
}

// errPrepareStopped ends a preparation that Close interrupted.
var errPrepareStopped = errors.New("wal: spare preparation stopped by Close")

// zeroChunk is the size of the writes that zero-fill a new spare. Each
// chunk is written back (writeBackZeros: sync_file_range, waiting for it)
// before the next is written, so the device never holds more than one
// chunk of zeros ahead of a log flush, and the closing fsync has little
// but the file's metadata left to write. Written in one go and fsynced,
// the 16 MiB of a new spare went to the device at once, and every synced
// group waited behind them. Until checkpoints free segments to recycle, a
// new database prepares a spare at most rotations (8 of the about 15 in a
// run of 60,000 synced 4 KiB Puts with 16 MiB segments), and such runs
// at 64 writers were 1.03-1.13x as fast with the chunks written back
// (six pairs; level at 16 writers; BENCHMARKS.md, "New log segments
// written back a chunk at a time"). 256 KiB, as the heap's write-back
// regions (mirror.WriteBack).
const zeroChunk = 256 << 10

// writeBackZeros is vfsutil.WriteBack; tests replace it to see the calls
// and inject errors (MemFS files have no descriptor).
var writeBackZeros = vfsutil.WriteBack

// prepareSpare creates the spare sp: it writes sp.size zero bytes to
// sp.path+".tmp", a zeroChunk at a time, each written back before the
// next, fsyncs it (allocation and size included), closes it and renames
// it to sp.path. It gives up, deleting the temporary file, when
// stop is set, and on any error. The rename is not synced: a spare whose
// name a crash loses is simply gone.
func prepareSpare(o Options, sp spareFile, stop *atomic.Bool) error {
	tmp := sp.path + ".tmp"
	f, err := o.FS.Create(tmp, writeCategory)
	if err != nil {
		return fmt.Errorf("wal: create spare %s: %w", tmp, err)
	}
	zeros := make([]byte, min(sp.size, zeroChunk))
	for off := int64(0); off < sp.size && err == nil; {
		if stop != nil && stop.Load() {
			err = errPrepareStopped
			break
		}
		n := min(int64(len(zeros)), sp.size-off)
		clear(zeros) // some file systems scribble on written buffers (MemFS under -race)
		if _, err = f.Write(zeros[:n]); err == nil {
			// An error here is the range's write-back error, which the
			// fsync below would no longer report: keep it.
			if err = writeBackZeros(f, off, n); err != nil {
				err = fmt.Errorf("write back [%d, %d): %w", off, off+n, err)
			}
		}
		off += n
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if err = o.FS.Rename(tmp, sp.path); err != nil {
			err = fmt.Errorf("rename to %s: %w", sp.path, err)
		}
	}
	if err != nil {
		_ = o.FS.Remove(tmp) // best effort; Open deletes leftovers
		if errors.Is(err, errPrepareStopped) {
			return err
		}
		return fmt.Errorf("wal: prepare spare %s: %w", tmp, err)
	}
	return nil
}

// installSpare turns the spare sp into the segment whose first LSN is
// first: it writes the segment header (with a new salt) into it,
// fdatasyncs it, renames it to SegmentName(first) (replacing a file of
// that name), opens the segment's two handles and syncs the directory. On
// error the spare is lost to the pool; what is left on disk is a spare or
// an empty segment.
func installSpare(o Options, sp spareFile, first LSN) (*segment, error) {
	salt := o.newSalt()
	hdr := encodeSegmentHeader(o.DBID, first, salt)
	f, err := o.FS.OpenReadWrite(sp.path, writeCategory)
	if err != nil {
		return nil, fmt.Errorf("wal: open spare %s: %w", sp.path, err)
	}
	_, err = f.WriteAt(hdr, 0)
	if err == nil {
		err = f.SyncData()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("wal: write segment header %d into spare %s: %w", first, sp.path, err)
	}
	path := o.FS.PathJoin(o.Dir, SegmentName(first))
	// vfs.FS.ReuseForWrite is a rename and an open too; MemFS's version
	// can deadlock against a concurrent CrashClone, so rename and open.
	if err := o.FS.Rename(sp.path, path); err != nil {
		return nil, fmt.Errorf("wal: rename spare %s to %s: %w", sp.path, path, err)
	}
	s := &segment{first: first, path: path, salt: salt, start: int64(len(hdr)), end: int64(len(hdr)), size: sp.size}
	if s.w, err = o.FS.OpenReadWrite(path, writeCategory); err == nil {
		s.s, err = o.FS.OpenReadWrite(path, writeCategory)
	}
	if err != nil {
		err = fmt.Errorf("wal: open %s: %w", path, err)
	} else {
		err = vfsutil.SyncDir(o.FS, o.Dir)
	}
	if err != nil {
		_ = s.close() // the error at hand is the one to report
		return nil, err
	}
	return s, nil
}

// adoptSpares returns the spares in o.Dir that a new Log may use (oldest
// first) and the highest spare number found. It deletes leftovers of
// interrupted preparations ("*.spare.tmp"), spares whose size is not
// SegmentSize and spares beyond max(SpareSegments, 1); if it found any
// file, it syncs the directory, so that every spare's name is durable
// before a header is written into it.
func adoptSpares(o Options) ([]spareFile, uint64, error) {
	names, err := o.FS.List(o.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("wal: list %s: %w", o.Dir, err)
	}
	type numbered struct {
		id   uint64
		path string
	}
	var found []numbered
	var maxID uint64
	touched := false
	for _, name := range names {
		path := o.FS.PathJoin(o.Dir, name)
		if id, ok := parseNumbered(name, spareTmpSuffix); ok {
			maxID = max(maxID, id)
			touched = true
			if err := removeIfExists(o, path); err != nil {
				return nil, 0, err
			}
		} else if id, ok := parseNumbered(name, spareSuffix); ok {
			maxID = max(maxID, id)
			found = append(found, numbered{id, path})
		}
	}
	slices.SortFunc(found, func(a, b numbered) int { return cmp.Compare(a.id, b.id) })
	var spares, extra []spareFile
	for _, n := range found {
		touched = true
		st, err := o.FS.Stat(n.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("wal: stat %s: %w", n.path, err)
		}
		if st.Size() == o.SegmentSize {
			spares = append(spares, spareFile{path: n.path, size: st.Size()})
		} else {
			extra = append(extra, spareFile{path: n.path})
		}
	}
	if keep := max(o.SpareSegments, 1); len(spares) > keep {
		extra = append(extra, spares[:len(spares)-keep]...)
		spares = spares[len(spares)-keep:]
	}
	for _, sp := range extra {
		if err := removeIfExists(o, sp.path); err != nil {
			return nil, 0, err
		}
	}
	if touched {
		if err := vfsutil.SyncDir(o.FS, o.Dir); err != nil {
			return nil, 0, err
		}
	}
	return spares, maxID, nil
}

// removeIfExists deletes a file; one that is gone already is no error (a
// preparation goroutine of an abandoned Log may still be finishing).
func removeIfExists(o Options, path string) error {
	if err := o.FS.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("wal: remove %s: %w", path, err)
	}
	return nil
}

// startPrepareLocked decides, after an Append into cur, whether to prepare
// a spare now: the pool is empty, none is being prepared, the last
// preparation did not fail, and cur is past half full. If so it returns
// the function to call once l.mu is released: it starts the background
// goroutine (or, with Options.inlinePrepare, prepares inline). REQUIRES:
// l.mu held.
func (l *Log) startPrepareLocked(cur *segment) func() {
	s := &l.mu.spareState
	if len(s.spares) > 0 || s.preparing != nil || s.prepFailed || l.mu.closed ||
		cur.end-cur.start <= (cur.size-cur.start)/2 {
		return nil
	}
	s.spareID++
	sp := spareFile{path: l.opts.FS.PathJoin(l.opts.Dir, SpareName(s.spareID)), size: l.opts.SegmentSize}
	done := make(chan struct{})
	s.preparing = done
	if l.opts.inlinePrepare {
		return func() { l.prepare(sp, done) }
	}
	l.prepWG.Add(1)
	return func() {
		go func() {
			defer l.prepWG.Done()
			l.prepare(sp, done)
		}()
	}
}

// prepare prepares sp and adds it to the pool, then closes done. A failure
// is logged and stops further background preparations until the next
// rotation; it does not poison the Log (nothing of the log was written).
func (l *Log) prepare(sp spareFile, done chan struct{}) {
	err := prepareSpare(l.opts, sp, &l.closing)
	l.mu.Lock()
	if err != nil {
		l.mu.prepFailed = true
		if !errors.Is(err, errPrepareStopped) {
			l.opts.Logger.Warn(err.Error())
		}
	} else {
		l.mu.spares = append(l.mu.spares, sp)
		l.mu.stats.SparesPrepared++
	}
	l.mu.preparing = nil
	l.mu.Unlock()
	close(done)
}

// takeSpare removes a spare from the pool for a rotation, waiting for a
// preparation in progress if the pool is empty, or preparing one inline
// if none is. REQUIRES: appendMu and syncMu held.
func (l *Log) takeSpare() (spareFile, error) {
	for {
		l.mu.Lock()
		if n := len(l.mu.spares); n > 0 {
			sp := l.mu.spares[n-1]
			l.mu.spares = l.mu.spares[:n-1]
			l.mu.Unlock()
			return sp, nil
		}
		if done := l.mu.preparing; done != nil {
			l.mu.Unlock()
			<-done
			continue
		}
		l.mu.spareID++
		sp := spareFile{path: l.opts.FS.PathJoin(l.opts.Dir, SpareName(l.mu.spareID)), size: l.opts.SegmentSize}
		l.mu.Unlock()
		if err := prepareSpare(l.opts, sp, nil); err != nil {
			return sp, err
		}
		l.mu.Lock()
		l.mu.stats.SparesPrepared++
		l.mu.Unlock()
		return sp, nil
	}
}

// RemoveThrough disposes of the segments all of whose records have LSNs
// <= lsn (typically after a checkpoint at lsn), oldest first, then syncs
// the directory. Up to Options.SpareSegments of them (counting the spares
// already in the pool) are kept as spares for later segments, if they
// have exactly SegmentSize bytes; the others are deleted. The current
// segment is never touched. It may run concurrently with Append and the
// syncs.
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
	room := l.opts.SpareSegments - len(l.mu.spares)
	if l.mu.preparing != nil {
		room--
	}
	l.mu.Unlock()

	removed := 0
	var recycled []spareFile
	var err error
	for _, v := range victims {
		if room > 0 && v.size == l.opts.SegmentSize {
			l.mu.Lock()
			l.mu.spareID++
			sp := spareFile{path: l.opts.FS.PathJoin(l.opts.Dir, SpareName(l.mu.spareID)), size: v.size}
			l.mu.Unlock()
			if err = l.opts.FS.Rename(v.path, sp.path); err != nil {
				err = fmt.Errorf("wal: rename %s to spare %s: %w", v.path, sp.path, err)
				break
			}
			recycled = append(recycled, sp)
			room--
		} else if err = l.opts.FS.Remove(v.path); err != nil {
			err = fmt.Errorf("wal: remove %s: %w", v.path, err)
			break
		}
		removed++
	}
	if removed == 0 {
		return err
	}
	// Only RemoveThrough shortens segs, so the removed ones are still its
	// prefix.
	l.mu.Lock()
	l.mu.segs = append([]segmentInfo(nil), l.mu.segs[removed:]...)
	l.mu.Unlock()
	if serr := vfsutil.SyncDir(l.opts.FS, l.opts.Dir); serr != nil {
		// The recycled files stay on disk as spares for the next Open.
		return errors.Join(err, serr)
	}
	l.mu.Lock()
	l.mu.spares = append(l.mu.spares, recycled...)
	l.mu.stats.SegmentsRecycled += uint64(len(recycled))
	l.mu.Unlock()
	return err
}

// ReleaseSpares deletes the spare files in the pool and syncs the
// directory, giving their space back, and returns how many bytes they
// held: a caller that finds the file system full calls it (after
// RemoveThrough, which may have kept obsolete segments as spares). A
// preparation in progress is not affected. Afterwards a rotation that
// finds no spare zero-fills a new one, which needs SegmentSize bytes free,
// and RemoveThrough recycles again.
func (l *Log) ReleaseSpares() (freed int64, err error) {
	l.removeMu.Lock()
	defer l.removeMu.Unlock()
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	spares := l.mu.spares
	l.mu.spares = nil
	l.mu.Unlock()
	for i, sp := range spares {
		if err = removeIfExists(l.opts, sp.path); err != nil {
			l.mu.Lock() // the rest are intact: back into the pool
			l.mu.spares = append(l.mu.spares, spares[i:]...)
			l.mu.Unlock()
			break
		}
		freed += sp.size
	}
	if freed > 0 {
		err = errors.Join(err, vfsutil.SyncDir(l.opts.FS, l.opts.Dir))
	}
	return freed, err
}
