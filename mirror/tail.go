package mirror

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Zeros ahead of the device's end. A replica file grows as blocks are first
// written, so a flush (fdatasync) of a block written for the first time
// must also make the file system's record of the new space durable: on
// ext4 that is a journal commit, about twice the cost of flushing blocks
// the file already had. ZeroAhead writes zeros past every block written
// so far, on every writable replica, and flushes them, so that the
// blocks the allocator hands out next are already part of the file when a
// durable write flushes them.
//
// Zeros go only where no write has gone: past tail.end, the end of every
// WriteAt since Open (at Open, the size of the largest replica file). A
// WriteAt raises end before it writes and then checks tail.zeroing, the
// offset ZeroAhead is writing zeros from; ZeroAhead publishes zeroing and
// then checks end again. Both are sequentially consistent atomics, so at
// least one of the two sees the other: the write waits until the zeros
// are written, or ZeroAhead gives the range up and starts again past the
// write. A resync's copies and the repairs of bad copies rewrite
// allocated blocks, which a WriteAt (or the file at Open) put below end.
//
// ZeroAhead flushes through a descriptor of its own. On Linux an error
// of an earlier write-back is reported once to each open file description
// that syncs, so ZeroAhead's flush cannot take an error that the next
// Sync of the set's own descriptor should see (fsync(2), "errseq").
type tail struct {
	// end is the byte offset past every write to a replica file since the
	// set was opened, and past every file's size at Open; only Truncate
	// lowers it.
	end atomic.Int64
	// zeroing is where ZeroAhead is writing zeros from, math.MaxInt64
	// while it is not. A WriteAt that ends past it waits on done.
	zeroing atomic.Int64

	mu   sync.Mutex // guards the change of zeroing back to MaxInt64 (done's lock)
	done *sync.Cond

	// serial orders ZeroAhead calls with each other and with Truncate.
	serial sync.Mutex
	zeroed atomic.Int64 // bytes of zeros written and flushed, per replica
}

// zeroChunk is the most zeros ZeroAhead writes in one call per replica,
// which bounds how long a WriteAt into that range waits.
const zeroChunk = 1 << 20

var zeros [zeroChunk]byte

// initTail sets end past the largest replica file. REQUIRES: s.mu held
// exclusively or not yet shared (Open).
func (s *Set) initTail() {
	s.tail.done = sync.NewCond(&s.tail.mu)
	s.tail.zeroing.Store(math.MaxInt64)
	end := s.headerBytes
	for _, r := range s.replicas {
		if r.f == nil {
			continue
		}
		if fi, err := r.f.Stat(); err == nil {
			end = max(end, fi.Size())
		} else {
			end = math.MaxInt64 // unknown: never write zeros
		}
	}
	s.tail.end.Store(end)
}

// admitWrite records a write that ends at byte offset end and waits while
// ZeroAhead writes zeros that the write could overlap. It is called before
// the write.
func (t *tail) admitWrite(end int64) {
	for {
		cur := t.end.Load()
		if end <= cur || t.end.CompareAndSwap(cur, end) {
			break
		}
	}
	if end <= t.zeroing.Load() {
		return
	}
	t.mu.Lock()
	for end > t.zeroing.Load() {
		t.done.Wait()
	}
	t.mu.Unlock()
}

// raiseEnd moves end to at least off.
func (t *tail) raiseEnd(off int64) {
	for {
		cur := t.end.Load()
		if off <= cur || t.end.CompareAndSwap(cur, off) {
			return
		}
	}
}

// lowerEnd moves end down to off if it is past it (Truncate: nothing is
// written past the cut while it runs).
func (t *tail) lowerEnd(off int64) {
	for {
		cur := t.end.Load()
		if cur <= off || t.end.CompareAndSwap(cur, off) {
			return
		}
	}
}

// endZeroing marks that no zeros are being written and wakes the writes
// that waited for them.
func (t *tail) endZeroing() {
	t.mu.Lock()
	t.zeroing.Store(math.MaxInt64)
	t.done.Broadcast()
	t.mu.Unlock()
}

// Reach returns the number of blocks from block 0 to the end of the last
// write or zeros written: ZeroAhead(ctx, n) writes nothing for n at most
// that.
func (s *Set) Reach() uint64 {
	end := s.tail.end.Load() - s.headerBytes
	if end <= 0 {
		return 0
	}
	return uint64(end) / uint64(s.cfg.BlockSize)
}

// Zeroed returns how many bytes of zeros ZeroAhead has written and flushed
// (counted once, however many replicas took them).
func (s *Set) Zeroed() int64 { return s.tail.zeroed.Load() }

// ZeroAhead writes zeros to every writable replica from the end of the
// last write up to the start of block blocks, and flushes them. It writes
// nothing if every write so far already reached that far. It stops at the
// first error (a full disk ends it like any other), leaving what it
// wrote: zeros past the last write are free space to the caller, and no
// replica changes state. ctx ends it between chunks.
func (s *Set) ZeroAhead(ctx context.Context, blocks uint64) error {
	if s.closed.Load() {
		return ErrClosed
	}
	t := &s.tail
	t.serial.Lock()
	defer t.serial.Unlock()
	limit := s.offset(blocks)
	start := t.end.Load()
	if start >= limit {
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		lo := t.end.Load()
		if lo >= limit {
			break
		}
		hi := min(limit, (lo/zeroChunk+1)*zeroChunk)
		t.zeroing.Store(lo)
		if t.end.Load() != lo { // a write went past lo: start past it
			t.endZeroing()
			continue
		}
		err := s.writeZeros(lo, hi)
		if err == nil {
			t.raiseEnd(hi)
		}
		t.endZeroing()
		if err != nil {
			return err
		}
	}
	if err := s.syncZeros(); err != nil {
		return err
	}
	t.zeroed.Add(limit - start)
	return nil
}

// writeZeros writes zeros over [lo, hi) of every writable replica, holding
// s.mu shared as a write does.
func (s *Set) writeZeros(lo, hi int64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, m := range s.view.Load().writable {
		if _, err := m.f.WriteAt(zeros[:hi-lo], lo); err != nil {
			return fmt.Errorf("mirror: write zeros at byte %d of %s: %w", lo, m.r.path, err)
		}
	}
	return nil
}

// syncZeros flushes every writable replica through a descriptor opened for
// the purpose (see the comment on tail).
func (s *Set) syncZeros() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var errs []error
	for _, m := range s.view.Load().writable {
		f, err := s.cfg.FS.OpenReadWrite(m.r.path, vfs.WriteCategoryUnspecified)
		if err != nil {
			errs = append(errs, fmt.Errorf("mirror: open %s to flush zeros: %w", m.r.path, err))
			continue
		}
		if err := f.SyncData(); err != nil {
			errs = append(errs, fmt.Errorf("mirror: flush zeros of %s: %w", m.r.path, err))
		}
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("mirror: close %s after flushing zeros: %w", m.r.path, err))
		}
	}
	return errors.Join(errs...)
}
