package mirror

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// The tracking state of the replicas that are not in sync: for each, its
// tracking bitmap (the blocks written since it went stale) and its sync
// bitmap (the blocks a resync has brought up to date). A checkpoint writes
// it (Capture) and Open reads it back; log replay re-marks what was written
// after the checkpoint (MarkWritten). Wire format (never change; bump
// filehdr.Version):
//
//	+-------------------+------------------------------------------+--------+
//	| filehdr.Header    | body                                     | CRC-32C|
//	| 32 B (kind "TR")  |                                          | of body|
//	+-------------------+------------------------------------------+--------+
//
//	body:   | nEntries uvarint | nEntries x entry |
//	entry:  | id uvarint | flags 1 B | trackLSN uvarint | [track runs] | synced runs |
//	runs:   | nRuns uvarint | nRuns x (gap uvarint, len uvarint) |
//
// flags bit 0 says the entry has a tracking bitmap (track runs follow);
// without one the replica needs a full copy. A set of blocks is its runs
// of consecutive blocks in increasing order: gap is the distance from the
// end of the previous run (from block 0 for the first), len >= 1. The CRC
// (little-endian) covers the body.

const (
	flagHasTrack = 1 << 0

	// maxTrackedBlock bounds block numbers in a decoded file (2^48 blocks
	// is far beyond any heap), so corrupt input cannot overflow.
	maxTrackedBlock = 1 << 48
)

var errShort = errors.New("truncated")

// trackEntry is the decoded state of one replica.
type trackEntry struct {
	id       int
	trackLSN base.LSN
	track    *blockSet // nil: a full copy is needed
	synced   *blockSet
}

// Capture returns the encoded tracking state of every replica that is not
// in sync, or nil if all are, for a checkpoint to persist (heapkv calls it
// with its commit lock held, after syncing the heap, so that it holds every
// mark of the writes up to the checkpoint). Before returning it syncs the
// replicas that are resyncing, so every block its sync bitmaps hold is
// durable on them. If a replica changes state meanwhile it starts again.
func (s *Set) Capture() ([]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	for attempt := 0; ; attempt++ {
		v0 := s.version.Load()
		var entries []trackEntry
		var failed []failure
		s.mu.RLock()
		for _, r := range s.replicas {
			if r.state == InSync {
				continue
			}
			e := trackEntry{id: r.id, trackLSN: r.trackLSN, synced: r.synced.Clone()}
			if r.track != nil {
				e.track = r.track.Clone()
			}
			entries = append(entries, e)
			if r.state == Resyncing && r.f != nil {
				if err := r.f.SyncData(); err != nil {
					failed = append(failed, failure{r, fmt.Errorf("sync %s: %w", r.path, err)})
				} else {
					s.syncs.Add(1)
				}
			}
		}
		s.mu.RUnlock()
		if len(failed) > 0 {
			s.fail(failed, true)
		}
		if s.version.Load() == v0 {
			if len(entries) == 0 {
				return nil, nil
			}
			return encodeTracking(s.cfg.DBID, entries), nil
		}
		if attempt == 3 {
			return nil, errors.New("mirror: capture tracking state: replica states keep changing")
		}
	}
}

func encodeTracking(id filehdr.DBID, entries []trackEntry) []byte {
	b := make([]byte, filehdr.Size, 256)
	filehdr.Header{Kind: filehdr.KindTracking, Version: filehdr.Version, DBID: id}.Encode(b)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(e.id))
		var flags byte
		if e.track != nil {
			flags |= flagHasTrack
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(e.trackLSN))
		if e.track != nil {
			b = appendRuns(b, e.track)
		}
		b = appendRuns(b, e.synced)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[filehdr.Size:], castagnoli))
}

func appendRuns(b []byte, s *blockSet) []byte {
	var runs [][2]uint64
	for start, n := range s.Runs() {
		runs = append(runs, [2]uint64{start, n})
	}
	b = binary.AppendUvarint(b, uint64(len(runs)))
	var end uint64
	for _, r := range runs {
		b = binary.AppendUvarint(b, r[0]-end)
		b = binary.AppendUvarint(b, r[1])
		end = r[0] + r[1]
	}
	return b
}

// decodeTracking parses a tracking file of database id, dropping blocks at
// or beyond limit.
func decodeTracking(b []byte, id filehdr.DBID, limit uint64) (map[int]trackEntry, error) {
	if _, err := filehdr.Check(b, filehdr.KindTracking, id); err != nil {
		return nil, err
	}
	if len(b) < filehdr.Size+4 {
		return nil, fmt.Errorf("tracking state truncated at %d bytes", len(b))
	}
	body, sum := b[filehdr.Size:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("tracking state checksum %08x, want %08x", got, sum)
	}
	d := decoder{b: body, limit: min(limit, maxTrackedBlock)}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		return nil, fmt.Errorf("tracking state claims %d entries", n)
	}
	out := make(map[int]trackEntry)
	for i := uint64(0); i < n && d.err == nil; i++ {
		var e trackEntry
		rid := d.uvarint()
		flags := d.byte()
		e.trackLSN = base.LSN(d.uvarint())
		if flags&flagHasTrack != 0 {
			e.track = d.runs()
		}
		e.synced = d.runs()
		if d.err != nil {
			break
		}
		if flags&^flagHasTrack != 0 || rid > 1<<20 {
			return nil, fmt.Errorf("tracking state entry %d: bad flags %#x or replica %d", i, flags, rid)
		}
		if _, dup := out[int(rid)]; dup {
			return nil, fmt.Errorf("tracking state lists replica %d twice", rid)
		}
		e.id = int(rid)
		out[e.id] = e
	}
	if d.err != nil {
		return nil, fmt.Errorf("tracking state body: %w", d.err)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("tracking state has %d trailing bytes", len(d.b))
	}
	return out, nil
}

// decoder reads uvarints; the first error sticks.
type decoder struct {
	b     []byte
	err   error
	limit uint64 // runs() drops blocks at or beyond it
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errShort
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) runs() *blockSet {
	s := newBlockSet()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b))/2 {
		d.err = fmt.Errorf("%d runs in %d bytes", n, len(d.b))
	}
	var end uint64
	for i := uint64(0); i < n && d.err == nil; i++ {
		gap, l := d.uvarint(), d.uvarint()
		if d.err != nil {
			break
		}
		if l == 0 || gap > maxTrackedBlock || l > maxTrackedBlock || end+gap+l > maxTrackedBlock || (i > 0 && gap == 0) {
			d.err = fmt.Errorf("run %d: gap %d, length %d after block %d", i, gap, l, end)
			break
		}
		start := end + gap
		end = start + l
		for l = min(end, d.limit) - min(start, d.limit); l > 0; { // SetRange takes an int
			c := min(l, 1<<30)
			s.SetRange(start, int(c))
			start, l = start+c, l-c
		}
	}
	return s
}
