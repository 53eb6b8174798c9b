package heapkv

import "sync"

// ViewValue calls fn with the value stored under key, or returns an error
// wrapping ErrNotFound (without calling fn) if there is none. It is Get
// for callers that do not keep the value: the slice fn receives is valid
// only until fn returns and must not be modified (copy what must outlive
// the call). ViewValue returns fn's error as it is.
//
// What ViewValue saves is Get's allocation. A value kept in the index is
// passed as it lies in the index's memory. A heap value is copied once, out
// of the heap's memory map (or read with pread) into a buffer that later
// calls reuse, and its checksum is verified there: the bytes fn sees are
// the bytes that were verified, and an I/O error of the disk under the map
// is met (and repaired from another replica) before fn runs, never inside
// it. A value stored compressed is decompressed into memory of its own, as
// Get does.
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
