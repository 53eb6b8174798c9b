package heapkv

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heapkv/heapkv/internal/pace"
)

// ScrubReport is what Scrub found and fixed.
type ScrubReport struct {
	Values        int64                `json:"values"`        // heap values verified
	Copies        int64                `json:"copies"`        // copies read: one per value and in-sync replica
	BytesRead     int64                `json:"bytes_read"`    // bytes read over all copies
	BadCopies     int64                `json:"bad_copies"`    // copies that failed their checksum or could not be read
	ReadErrors    int64                `json:"read_errors"`   // the bad copies that could not be read at all
	Repaired      int64                `json:"repaired"`      // bad copies rewritten from a good copy
	Unrecoverable int64                `json:"unrecoverable"` // values with no good copy: reading them fails with ErrCorrupt
	Replicas      []ScrubReplicaReport `json:"replicas"`
	Problems      []string             `json:"problems"` // the first maxProblems values with no good copy
	Duration      time.Duration        `json:"duration_ns"`
}

// ScrubReplicaReport is what Scrub found on one replica.
type ScrubReplicaReport struct {
	ID        int   `json:"id"`
	BadCopies int64 `json:"bad_copies"`
	Repaired  int64 `json:"repaired"`
}

// String summarises the report.
func (r *ScrubReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "values %d, copies %d (%d bytes) in %v\n", r.Values, r.Copies, r.BytesRead, r.Duration.Round(time.Millisecond))
	fmt.Fprintf(&b, "bad copies %d (unreadable %d), repaired %d, unrecoverable values %d", r.BadCopies, r.ReadErrors, r.Repaired, r.Unrecoverable)
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "\n  %s", p)
	}
	return b.String()
}

// scrubProgress is the progress of the running (or last) scrub, for Stats.
type scrubProgress struct {
	running atomic.Bool
	values  atomic.Int64
	bytes   atomic.Int64
}

// scrubBatchValues bounds how many values one index snapshot (and pin)
// covers, so that a long scrub does not hold freed space back for long.
const scrubBatchValues = 4096

// Scrub verifies every live heap value on every in-sync replica, reading
// the replica files themselves (never a cache): each copy whose checksum
// fails or that cannot be read is rewritten from a good copy. It returns
// what it found; the error wraps ErrCorrupt if some value has no good copy
// left (the report names them). Writes go on meanwhile; each batch of
// values is checked as of one moment, and values written after a batch
// was taken are checked only if a later batch reaches them. Options.ScrubRate
// paces the reads; Stats reports progress. ctx cancels it, and so does
// Close.
func (db *DB) Scrub(ctx context.Context) (*ScrubReport, error) {
	if err := db.errIfReadOnly("scrub"); err != nil {
		return nil, err
	}
	if err := db.enter(); err != nil {
		return nil, err
	}
	db.bg.wg.Add(1)
	db.leave()
	defer db.bg.wg.Done()
	if !db.stats.scrub.running.CompareAndSwap(false, true) {
		return nil, ErrScrubRunning
	}
	defer db.stats.scrub.running.Store(false)
	db.stats.scrub.values.Store(0)
	db.stats.scrub.bytes.Store(0)
	ctx, cancel := db.untilClose(ctx)
	defer cancel()

	s := scrubber{db: db, ctx: ctx, rep: &ScrubReport{}, pace: pace.New(db.opts.ScrubRate), start: time.Now()}
	for _, st := range db.heap.Status() {
		s.rep.Replicas = append(s.rep.Replicas, ScrubReplicaReport{ID: st.ID})
	}
	for {
		done, err := s.batch()
		if err != nil {
			if db.stopping() {
				err = fmt.Errorf("%w: scrub stopped: %w", ErrClosed, err)
			}
			s.rep.Duration = time.Since(s.start)
			return s.rep, err
		}
		if done {
			break
		}
	}
	rep := s.rep
	rep.Duration = time.Since(s.start)
	db.logger.Info("scrub done", "values", rep.Values, "bad_copies", rep.BadCopies, "repaired", rep.Repaired, "unrecoverable", rep.Unrecoverable)
	if rep.Unrecoverable > 0 {
		return rep, fmt.Errorf("%w: scrub found %d values with no good copy; first: %s", ErrCorrupt, rep.Unrecoverable, rep.Problems[0])
	}
	return rep, nil
}

// scrubber is one Scrub call.
type scrubber struct {
	db    *DB
	ctx   context.Context
	rep   *ScrubReport
	pace  *pace.Pacer
	start time.Time // when the scrub began
	next  []byte    // the first key of the next batch; nil before the first
}

// batch verifies up to scrubBatchValues values from s.next on, under one
// index snapshot and pin. done means the index is exhausted.
func (s *scrubber) batch() (done bool, err error) {
	db := s.db
	db.applier.mu.Lock()
	snap := db.index.NewSnapshot()
	tok := db.pins.pin(db.applied.Load())
	db.applier.mu.Unlock()
	defer db.pins.unpin(tok)
	defer snap.Close()
	it, err := snap.NewIter(nil)
	if err != nil {
		return false, fmt.Errorf("heapkv: scrub: %w", indexError("new iterator", err))
	}
	defer it.Close()
	valid := false
	if s.next == nil {
		valid = it.First()
	} else {
		valid = it.SeekGE(s.next)
	}
	bs := int64(db.geom.BlockSize)
	for n := 0; valid; valid = it.Next() {
		if err := s.ctx.Err(); err != nil {
			return false, err
		}
		key := it.Key()
		raw, err := it.ValueAndErr()
		if err != nil {
			return false, indexError(fmt.Sprintf("scrub: value of %q", key), err)
		}
		e, err := db.decodeEntry(key, raw)
		if err != nil {
			s.problem("%v", err)
			continue
		}
		if !e.isHeap {
			continue
		}
		var blocks int64
		for _, x := range e.ptr.extents {
			blocks += int64(x.Len)
		}
		if err := s.pace.Wait(s.ctx, blocks*bs*int64(max(db.heap.InSync(), 1))); err != nil {
			return false, err
		}
		_, res, err := db.readCopies(&e.ptr, true)
		r := s.rep
		r.Values++
		r.Copies += int64(res.Copies)
		r.BytesRead += res.BytesRead
		r.BadCopies += int64(len(res.Bad))
		r.ReadErrors += int64(len(res.Unreadable))
		r.Repaired += int64(len(res.Repaired))
		for _, id := range res.Bad {
			r.Replicas[id].BadCopies++
		}
		for _, id := range res.Repaired {
			r.Replicas[id].Repaired++
		}
		db.stats.scrub.values.Add(1)
		db.stats.scrub.bytes.Add(res.BytesRead)
		if err != nil {
			s.problem("key %q at %v (written at LSN %d): %v", key, e.ptr.extents, e.ptr.lsn, err)
		}
		if n++; n >= scrubBatchValues {
			s.next = append(append(s.next[:0], key...), 0)
			return false, nil
		}
	}
	if err := it.Error(); err != nil {
		return false, fmt.Errorf("heapkv: scrub: %w", indexError("iterate", err))
	}
	return true, nil
}

func (s *scrubber) problem(format string, args ...any) {
	s.rep.Unrecoverable++
	if len(s.rep.Problems) < maxProblems {
		s.rep.Problems = append(s.rep.Problems, fmt.Sprintf(format, args...))
	}
}
