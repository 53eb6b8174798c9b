package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Replay reads every record with LSN > after, in LSN order, and calls fn
// with it. The payload passed to fn is valid only during the call. Replay
// returns the last LSN of the log (after if the log holds nothing beyond
// after); the caller then resumes writing with Open(opts, last+1).
//
// Replay starts at the newest segment whose first LSN is <= after+1 and
// ignores older segments except for checking their headers; spare files
// are never read. A format 0 segment's records end at the end of the file,
// a format 1 segment's where no record of its own starts and nothing after
// it bears its salt (zeros, or frames of an earlier use of the file): the
// normal end of its data, which is not logged. The log ends at x-1, a
// torn tail of writes never known durable, when at expected LSN x
//   - the last segment holds a bad record (torn, zeroed, failing its
//     checksum or carrying another LSN) and no valid record later in that
//     segment carries a synced LSN >= x;
//   - fn refuses the record with ErrStop, under the same condition; or
//   - a non-last segment reaches x while the next segment starts at x (an
//     earlier recovery cut the log there and Open started a new segment;
//     anything left in the old segment from x on is superseded, again
//     unless a later record in it carries a synced LSN >= x).
//
// In the first two cases x must also be above the sync mark (SyncMarkName),
// an LSN a flush made durable, and the log must reach the mark: a
// bad or refused record at x <= mark, or a log that ends before the mark
// (its last segment cut short, emptied or deleted), is corruption. (A cut,
// the third case, is not checked against the mark: the log continues in
// the next segment.)
//
// Anything else is corruption: an error wrapping ErrCorrupt that names the
// file and offset. So are a missing or overlapping segment, a foreign file
// or one of another database, a damaged sync mark file, and a torn header
// anywhere but in the last segment (a last segment with a torn or short
// header counts as empty). Torn tails are logged as one-line warnings.
//
// If fn returns another error Replay stops and returns it wrapped; on any
// error last is the last LSN passed to fn (or after). Replay never modifies
// or deletes anything; it must not run on a log a Log is appending to.
func Replay(opts Options, after LSN, fn func(lsn LSN, payload []byte) error) (last LSN, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return after, err
	}
	mark, err := readMarkLSN(o)
	if err != nil {
		return after, err
	}
	segs, err := listSegments(o)
	if err != nil {
		return after, err
	}
	if len(segs) == 0 {
		if mark > after {
			return after, fmt.Errorf("%w: %s holds no log segment, but the sync mark %s says the log was durable through LSN %d: LSNs %d..%d are missing",
				ErrCorrupt, o.Dir, o.FS.PathJoin(o.Dir, SyncMarkName), mark, after+1, mark)
		}
		return after, nil
	}
	i0 := -1
	for i, s := range segs {
		if s.first <= after+1 {
			i0 = i
		}
	}
	if i0 < 0 {
		return after, fmt.Errorf("%w: first segment %s starts at LSN %d: LSNs %d..%d are missing",
			ErrCorrupt, segs[0].path, segs[0].first, after+1, segs[0].first-1)
	}
	for _, s := range segs[:i0] {
		b, err := readPrefix(o.FS, s.path, SaltedSegmentHeaderSize)
		if err != nil {
			return after, err
		}
		if _, err := checkSegmentHeader(b, o.DBID, s.path, s.first); err != nil {
			if errors.Is(err, errTornHeader) {
				err = fmt.Errorf("%w: segment %s: torn header in a non-last segment", ErrCorrupt, s.path)
			}
			return after, err
		}
	}
	r := replayer{o: o, fn: fn, after: after, last: after, expect: segs[i0].first,
		mark: mark, markPath: o.FS.PathJoin(o.Dir, SyncMarkName)}
	for i := i0; i < len(segs); i++ {
		var next *segmentFile
		if i+1 < len(segs) {
			next = &segs[i+1]
		}
		done, err := r.segment(segs[i], next)
		if err != nil {
			return r.last, err
		}
		if done {
			break
		}
	}
	// A torn tail at x was checked against the mark where it was found
	// (x > mark, so the log reaches it); a clean end, at the end of the
	// last segment read, is checked here.
	if end := r.expect - 1; end < r.mark {
		return r.last, fmt.Errorf("%w: log ends at LSN %d at offset %d of segment %s, but the sync mark %s says it was durable through LSN %d: LSNs %d..%d are missing",
			ErrCorrupt, end, r.endOff, r.endPath, r.markPath, r.mark, end+1, r.mark)
	}
	if end := r.expect - 1; end < after {
		o.Logger.Warn(fmt.Sprintf("wal: log ends at LSN %d, before replay start %d", end, after))
	}
	return r.last, nil
}

// readMarkLSN returns the LSN recorded in the sync mark file, 0 if there is
// none.
func readMarkLSN(o Options) (LSN, error) {
	m, _, err := readSyncMark(o)
	return m.lsn, err
}

// replayer is the state of one Replay.
type replayer struct {
	o      Options
	fn     func(LSN, []byte) error
	after  LSN
	last   LSN // last LSN passed to fn, or after
	expect LSN // LSN the next record must have

	mark     LSN    // the sync mark: the log is durable through it
	markPath string // the sync mark file, for messages
	endPath  string // the segment read last, for messages
	endOff   int    // where its records end
}

// segment replays one segment; next is the segment after it (nil for the
// last). done reports that the log ended in this segment.
func (r *replayer) segment(s segmentFile, next *segmentFile) (done bool, err error) {
	if s.first != r.expect {
		what := "missing LSNs"
		if s.first < r.expect {
			what = "overlapping LSNs"
		}
		return true, fmt.Errorf("%w: segment %s starts at LSN %d, want %d (%s)", ErrCorrupt, s.path, s.first, r.expect, what)
	}
	v, err := openView(r.o.FS, s.path)
	if err != nil {
		return true, err
	}
	defer v.close()
	r.endPath, r.endOff = s.path, v.size
	h, err := readHeader(v, r.o.DBID, s)
	if err != nil {
		if !errors.Is(err, errTornHeader) {
			return true, err
		}
		if next != nil {
			return true, fmt.Errorf("%w: segment %s: torn header in a non-last segment", ErrCorrupt, s.path)
		}
		// A last segment whose header never reached the disk is empty,
		// unless a record in it proves LSNs from s.first on were durable.
		if r.expect <= r.mark {
			return true, fmt.Errorf("%w: segment %s (%d bytes): header at offset 0 is torn or missing, but the sync mark %s says the log was durable through LSN %d: LSNs %d..%d are missing",
				ErrCorrupt, s.path, v.size, r.markPath, r.mark, r.expect, r.mark)
		}
		p, rh, ok, err := findTornHeaderEvidence(v, r.expect)
		if err != nil {
			return true, err
		}
		if ok {
			return true, fmt.Errorf("%w: segment %s: header is damaged but the record at offset %d (LSN %d, synced %d) shows LSN %d was durable",
				ErrCorrupt, s.path, p, rh.lsn, rh.synced, r.expect)
		}
		r.o.Logger.Warn(fmt.Sprintf("wal: torn tail truncated at LSN %d in file %s (torn segment header)", r.expect, s.path))
		return true, nil
	}
	off := h.size
	for off < v.size {
		if next != nil && next.first == r.expect {
			end, err := h.endsAt(v, off)
			if err != nil {
				return true, err
			}
			if end {
				// The rest of a preallocated segment: zeros, or records
				// of an earlier use of the file.
				r.endOff = off
				return false, nil
			}
			// An earlier recovery stopped the log at r.expect-1 (see
			// ErrStop) and went on in the next segment; what follows here
			// is superseded, unless a record in it proves that LSN was
			// durable, which no recovery may cut.
			p, rh, ok, err := findDurableEvidence(v, off, r.expect, h)
			if err != nil {
				return true, err
			}
			if ok {
				return true, fmt.Errorf("%w: segment %s: LSN %d at offset %d is overlapped by segment %s, but the record at offset %d (LSN %d, synced %d) shows it was durable",
					ErrCorrupt, s.path, r.expect, off, next.path, p, rh.lsn, rh.synced)
			}
			r.o.Logger.Info(fmt.Sprintf("wal: log was cut at LSN %d in file %s (offset %d); continues in %s",
				r.expect, s.path, off, next.path))
			return false, nil
		}
		rh, payload, n, reason, err := h.decodeAt(v, off)
		if err != nil {
			return true, err
		}
		if reason == "" && rh.lsn != r.expect {
			reason = fmt.Sprintf("LSN %d, want %d", rh.lsn, r.expect)
		}
		if reason != "" {
			end, err := h.endsAt(v, off)
			if err != nil {
				return true, err
			}
			if end {
				// The end of the records of a preallocated segment, as
				// the end of the file is for a plain one.
				r.endOff = off
				return false, nil
			}
			return r.badRecord(s, h, next, v, off, reason)
		}
		if rh.lsn > r.after {
			if err := r.fn(rh.lsn, payload); err != nil {
				if errors.Is(err, ErrStop) {
					return r.stop(s, h, next, v, off, err)
				}
				return true, fmt.Errorf("wal: replay of LSN %d: %w", rh.lsn, err)
			}
			r.last = rh.lsn
		}
		r.expect++
		off += n
	}
	return false, nil // clean end of segment
}

// badRecord decides whether the bad record at data[off:] (expected LSN
// r.expect) is a torn tail or corruption. (A non-last segment whose next
// segment starts at r.expect never gets here: segment cuts it first.)
func (r *replayer) badRecord(s segmentFile, h segHeader, next *segmentFile, v *view, off int, reason string) (done bool, err error) {
	x := r.expect
	if next != nil {
		return true, fmt.Errorf("%w: segment %s: bad record at offset %d (LSN %d): %s, and the next segment starts at LSN %d",
			ErrCorrupt, s.path, off, x, reason, next.first)
	}
	if x <= r.mark {
		return true, fmt.Errorf("%w: segment %s: bad record at offset %d (LSN %d): %s; the sync mark %s says the log was durable through LSN %d",
			ErrCorrupt, s.path, off, x, reason, r.markPath, r.mark)
	}
	p, rh, ok, err := findDurableEvidence(v, off, x, h)
	if err != nil {
		return true, err
	}
	if ok {
		return true, fmt.Errorf("%w: segment %s: bad record at offset %d (LSN %d): %s; the record at offset %d (LSN %d, synced %d) shows it was durable",
			ErrCorrupt, s.path, off, x, reason, p, rh.lsn, rh.synced)
	}
	r.o.Logger.Warn(fmt.Sprintf("wal: torn tail truncated at LSN %d in file %s (offset %d: %s)", x, s.path, off, reason))
	return true, nil
}

// stop ends the log before the valid record at data[off:] (LSN r.expect)
// because fn refused it with ErrStop (cause). That is only possible for a
// record that was never known durable: if a later segment exists (rotation
// synced this one) or a later record's synced LSN covers it, the refusal
// contradicts the log and is corruption.
func (r *replayer) stop(s segmentFile, h segHeader, next *segmentFile, v *view, off int, cause error) (done bool, err error) {
	x := r.expect
	if next != nil {
		return true, fmt.Errorf("%w: segment %s: replay refused LSN %d at offset %d, but segment %s follows, so it was durable: %w",
			ErrCorrupt, s.path, x, off, next.path, cause)
	}
	if x <= r.mark {
		return true, fmt.Errorf("%w: segment %s: replay refused LSN %d at offset %d, but the sync mark %s says the log was durable through LSN %d: %w",
			ErrCorrupt, s.path, x, off, r.markPath, r.mark, cause)
	}
	p, rh, ok, err := findDurableEvidence(v, off, x, h)
	if err != nil {
		return true, err
	}
	if ok {
		return true, fmt.Errorf("%w: segment %s: replay refused LSN %d at offset %d, but the record at offset %d (LSN %d, synced %d) shows it was durable: %w",
			ErrCorrupt, s.path, x, off, p, rh.lsn, rh.synced, cause)
	}
	r.o.Logger.Warn(fmt.Sprintf("wal: replay stopped before LSN %d in file %s (offset %d): %v", x, s.path, off, cause))
	return true, nil
}

// findDurableEvidence looks in the segment v (header h) from badOff on for
// a valid record whose synced LSN is >= x, i.e. a record written after
// LSN x was known durable. badOff is where record x starts (or should
// start). It checks every possible offset, since the records between may
// be damaged; cheap filters run before the checksum (see evidenceAt). In a
// salted segment only records carrying its salt count (stale frames of an
// earlier use of the file prove nothing), so only the offsets where the
// salt occurs are candidates.
func findDurableEvidence(v *view, badOff int, x LSN, h segHeader) (off int, rh recordHeader, ok bool, err error) {
	if !h.salted() {
		for p := badOff; p+RecordHeaderSize <= v.size; p++ {
			if rh, ok, err := evidenceAt(v, p, badOff, x, RecordHeaderSize, nil); ok || err != nil {
				return p, rh, ok, err
			}
		}
		return 0, recordHeader{}, false, nil
	}
	var salt [8]byte
	binary.LittleEndian.PutUint64(salt[:], h.salt)
	for from := badOff + recOffSalt; from < v.size; {
		q, err := v.index(from, salt[:])
		if q < 0 || err != nil {
			return 0, recordHeader{}, false, err
		}
		p := q - recOffSalt
		if rh, ok, err := evidenceAt(v, p, badOff, x, SaltedRecordHeaderSize, &h.salt); ok || err != nil {
			return p, rh, ok, err
		}
		from = q + 1
	}
	return 0, recordHeader{}, false, nil
}

// findTornHeaderEvidence is findDurableEvidence for a segment whose header
// is torn, so that neither its format nor its salt is known: it accepts a
// plain frame or a salted frame with any salt, from where the records of
// a plain segment would start.
func findTornHeaderEvidence(v *view, x LSN) (off int, rh recordHeader, ok bool, err error) {
	for p := SegmentHeaderSize; p+RecordHeaderSize <= v.size; p++ {
		if rh, ok, err := evidenceAt(v, p, SegmentHeaderSize, x, RecordHeaderSize, nil); ok || err != nil {
			return p, rh, ok, err
		}
		if rh, ok, err := evidenceAt(v, p, SegmentHeaderSize, x, SaltedRecordHeaderSize, nil); ok || err != nil {
			return p, rh, ok, err
		}
	}
	return 0, recordHeader{}, false, nil
}

// evidenceAt reports whether the segment v holds at offset p a valid frame
// with a header of hsize bytes (a salted one carrying *salt, unless salt
// is nil) whose LSN is above x and whose synced LSN is >= x. Cheap filters
// run before the checksum: such a record has lsn > x, synced in [x, lsn),
// and the lsn-x records from badOff up to it need at least hsize bytes
// each.
func evidenceAt(v *view, p, badOff int, x LSN, hsize int, salt *uint64) (recordHeader, bool, error) {
	if p < badOff || p+hsize > v.size {
		return recordHeader{}, false, nil
	}
	b, err := v.at(p, hsize)
	if err != nil {
		return recordHeader{}, false, err
	}
	rh := parseHeader(b)
	if rh.lsn <= x || rh.synced < x || rh.synced >= rh.lsn {
		return recordHeader{}, false, nil
	}
	if uint64(rh.lsn-x) > uint64(p-badOff)/uint64(hsize) {
		return recordHeader{}, false, nil
	}
	if hsize == SaltedRecordHeaderSize {
		rh.salt = binary.LittleEndian.Uint64(b[recOffSalt:])
		if salt != nil && rh.salt != *salt {
			return recordHeader{}, false, nil
		}
	}
	end := p + hsize + int(rh.n)
	if rh.n > MaxPayloadSize || end > v.size || end < p {
		return recordHeader{}, false, nil
	}
	if b, err = v.at(p, end-p); err != nil {
		return recordHeader{}, false, err
	}
	return rh, verify(b[:end-p], rh.crc) == "", nil
}

// ProvenDurable returns the highest LSN that the log proves was durable
// before the crash: the larger of the sync mark and the highest synced
// stamp of a valid record. Records up to it were acknowledged as synced at
// some point, records after it may never have been. It checks segment
// headers like Replay, reads each segment's records up to its first bad
// one, and modifies nothing. Replay still decides what the log holds;
// ProvenDurable only tells which of its records are known durable.
func ProvenDurable(opts Options) (LSN, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return 0, err
	}
	proven, err := readMarkLSN(o)
	if err != nil {
		return 0, err
	}
	segs, err := listSegments(o)
	if err != nil {
		return 0, err
	}
	for _, s := range segs {
		p, err := provenIn(o, s)
		if err != nil {
			return 0, err
		}
		proven = max(proven, p)
	}
	return proven, nil
}

// provenIn returns the highest synced stamp of the records of segment s
// up to its first bad one (0 for a torn header).
func provenIn(o Options, s segmentFile) (LSN, error) {
	v, err := openView(o.FS, s.path)
	if err != nil {
		return 0, err
	}
	defer v.close()
	h, err := readHeader(v, o.DBID, s)
	if errors.Is(err, errTornHeader) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	var proven LSN
	for off := h.size; off < v.size; {
		rh, _, n, reason, err := h.decodeAt(v, off)
		if err != nil {
			return 0, err
		}
		if reason != "" {
			break
		}
		proven = max(proven, rh.synced)
		off += n
	}
	return proven, nil
}
