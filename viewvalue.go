package heapkv

import (
	"sync"
	"time"
)

// ViewValue calls fn with the value stored under key, or returns an error
// wrapping ErrNotFound (without calling fn) if there is none. It is Get
// for callers that do not keep the value: the slice fn receives is valid
// only until fn returns and must not be modified (copy what must outlive
// the call). ViewValue returns fn's error as it is.
//
// What ViewValue saves is Get's allocation and, for most values, its copy.
// A value kept in the index is passed as it lies in the index's memory. A
// heap value stored as it is, in one extent, is passed as it lies in the
// heap's memory map, once its checksum has been verified there; blocks
// freed meanwhile are not reused until fn returns, so the bytes do not
// change under it. Other heap values (in several extents, or with the map
// off) are read into a buffer that later calls reuse and verified there,
// and a value stored compressed is decompressed into memory of its own.
//
// If the disk under the map fails while fn reads the slice, the fault is
// recovered (it is not a crash), the value is read again the ordinary way,
// which repairs it from another replica when it can, and fn is called
// again with that copy: fn may run twice for one call, so it must not
// depend on running once. A value that cannot be read is an error: fn is
// not called for it, or, interrupted by the fault, not called again.
//
// fn runs inside the read: it must not call methods of the database (a
// Close waiting for the read would deadlock it), and it should be short,
// since heap blocks freed meanwhile are not reused until it returns.
func (db *DB) ViewValue(key []byte, fn func(value []byte) error) error {
	return db.lookup(key, func(raw []byte) error {
		xp := getExtentBuf()
		var e entry
		err := db.decodeEntryTo(&e, key, raw, *xp)
		defer putExtentBuf(xp, e.ptr.extents)
		if err != nil {
			return err
		}
		if !e.isHeap {
			return fn(e.inline)
		}
		p := &e.ptr
		if viewed, err := db.viewMapped(p, fn, nil); viewed {
			return err
		}
		if p.codec != CodecNone || p.storedLen > maxPooledBuf {
			v, err := db.heapValue(key, p)
			if err != nil {
				return err
			}
			return fn(v)
		}
		bp := viewBufs.Get().(*[]byte)
		defer viewBufs.Put(bp)
		if uint64(cap(*bp)) < p.storedLen {
			*bp = make([]byte, p.storedLen, max(p.storedLen, min(2*uint64(cap(*bp)), maxPooledBuf)))
		}
		v, err := db.readStored(key, p, (*bp)[:p.storedLen], db.heap.ReadMapped)
		if err != nil {
			return err
		}
		return fn(v)
	})
}

// viewBufs holds ViewValue's value buffers (up to maxPooledBuf bytes each).
var viewBufs = sync.Pool{New: func() any { return new([]byte) }}

// viewMapped calls fn with the value of p as it lies in the heap's map,
// after verifying its CRC there, and returns true and fn's error. It
// returns false when it could not: p is compressed or in several extents,
// the heap is not mapped, the CRC did not match, or the map faulted (fn
// may then have been called and its result is dropped). The caller then
// reads the value the ordinary way, which repairs and reports. With took
// set, the CRC pass, the first read of the bytes, is timed into *took.
// REQUIRES: p pinned (its blocks not reused while fn runs).
func (db *DB) viewMapped(p *pointer, fn func([]byte) error, took *time.Duration) (bool, error) {
	if !p.viewable() {
		return false, nil
	}
	verified := false
	ok, err := db.heap.ViewMapped(p.extents[0].Start, int(p.storedLen), func(b []byte) error {
		var t0 time.Time
		if took != nil {
			t0 = time.Now()
		}
		if crcOf(b) != p.crc {
			return nil
		}
		if took != nil {
			*took = time.Since(t0)
		}
		verified = true
		return fn(b)
	})
	return ok && verified, err
}

// viewable reports whether p's value can be viewed where it lies in the
// heap's map: stored as it is, in one extent.
func (p *pointer) viewable() bool { return p.codec == CodecNone && len(p.extents) == 1 }

// ViewValue calls fn with the current value, as DB.ViewValue does for a
// key: without a copy when the value is a heap value in one extent and the
// heap is mapped, otherwise with the slice Value returns. When the
// iterator is not at a key, fn is not called and ViewValue returns nil
// (Value returns nil, nil). Errors are kept for Error as Value's are; fn's
// own error is returned as it is and not kept.
//
// The slice is valid only until fn returns. fn may run twice if the disk
// under the map fails while it reads (see DB.ViewValue), and it must not
// call methods of the iterator or the database.
func (it *Iterator) ViewValue(fn func(value []byte) error) error {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.done != nil {
		return it.done
	}
	if !it.valid {
		return nil
	}
	if it.valSet || it.inBuf || it.ra.slow || !it.db.heap.Mapped() {
		v, err := it.valueLocked()
		if err != nil {
			return err
		}
		return fn(v)
	}
	var e entry
	if err := it.entryLocked(&e); err != nil {
		return err
	}
	if e.isHeap && e.ptr.viewable() {
		if viewed, err := it.viewHeap(&e.ptr, fn); viewed {
			it.viewed = true
			return err
		}
	}
	v, err := it.valueOf(&e)
	if err != nil {
		return err
	}
	return fn(v)
}

// viewHeap is DB.viewMapped for the iterator's scan, timing one view in
// raTimeEvery as mappedValue times its copies. REQUIRES: it.mu held.
func (it *Iterator) viewHeap(p *pointer, fn func([]byte) error) (bool, error) {
	var took time.Duration
	var tookp *time.Duration
	if it.timeMapRead() {
		tookp = &took
	}
	viewed, err := it.db.viewMapped(p, fn, tookp)
	if viewed && tookp != nil {
		it.noteMapRead(p.storedLen, took)
	}
	return viewed, err
}
