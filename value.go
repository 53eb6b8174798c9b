package heapkv

import "fmt"

// The heap side of values: writing a value's blocks and reading them back.

// writeHeapValue allocates blocks for value and writes it to the heap.
func (db *DB) writeHeapValue(p *preparedOp, value []byte) error {
	nblocks := db.geom.BlocksFor(int64(len(value)))
	claim, err := db.alloc.Allocate(nblocks)
	if err != nil {
		return err
	}
	p.isHeap, p.claim = true, claim
	p.ptr = pointer{
		codec:     CodecNone,
		rawLen:    uint64(len(value)),
		storedLen: uint64(len(value)),
		crc:       crcOf(value),
		extents:   claim.Extents,
	}
	bs := db.geom.BlockSize
	off := 0
	for _, e := range claim.Extents {
		n := min(int(e.Len)*bs, len(value)-off)
		if err := db.writeBlocks(value[off:off+n], e.Start); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// writeBlocks writes p at block start, padding the last block with zeros so
// that the heap only ever sees whole-block writes: with 4 KiB blocks the
// kernel never has to read a page to update part of it.
func (db *DB) writeBlocks(p []byte, start uint64) error {
	bs := db.geom.BlockSize
	full := len(p) / bs * bs
	if full > 0 {
		if err := db.heap.WriteAt(p[:full], start); err != nil {
			return err
		}
	}
	if full == len(p) {
		return nil
	}
	tail := db.blockPool.Get().(*[]byte)
	defer db.blockPool.Put(tail)
	n := copy(*tail, p[full:])
	clear((*tail)[n:])
	return db.heap.WriteAt(*tail, start+uint64(full/bs))
}

// readValue reads and verifies a heap value.
func (db *DB) readValue(key []byte, p *pointer) ([]byte, error) {
	buf := make([]byte, p.storedLen)
	bs := uint64(db.geom.BlockSize)
	off := uint64(0)
	for _, e := range p.extents {
		n := min(uint64(e.Len)*bs, p.storedLen-off)
		if err := db.heap.ReadAt(buf[off:off+n], e.Start); err != nil {
			return nil, fmt.Errorf("heapkv: get %q: %w", key, err)
		}
		off += n
	}
	if got := crcOf(buf); got != p.crc {
		return nil, fmt.Errorf("%w: value of key %q at %v (written at LSN %d): checksum %08x, want %08x",
			ErrCorrupt, key, p.extents, p.lsn, got, p.crc)
	}
	return buf, nil
}
