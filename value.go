package heapkv

import "fmt"

// The heap side of values: writing a value's blocks and reading them back.

// writeHeapValue allocates blocks for value and writes it to the heap,
// compressed with Options.Compression when that saves at least one block
// (codec.go).
func (db *DB) writeHeapValue(p *preparedOp, value []byte) error {
	stored, codec, done := db.encoder.encode(value, db.geom.BlockSize)
	defer done()
	nblocks := db.geom.BlocksFor(int64(len(stored)))
	claim, err := db.alloc.Allocate(nblocks)
	if err != nil {
		return err
	}
	p.isHeap, p.claim = true, claim
	p.ptr = pointer{
		codec:     codec,
		rawLen:    uint64(len(value)),
		storedLen: uint64(len(stored)),
		crc:       crcOf(stored),
		extents:   claim.Extents,
	}
	cs := &db.codecStats
	cs.values.Add(1)
	cs.rawBytes.Add(int64(len(value)))
	cs.stored.Add(int64(len(stored)))
	if codec != CodecNone {
		cs.compressed.Add(1)
	}
	bs := db.geom.BlockSize
	off := 0
	for _, e := range claim.Extents {
		n := min(int(e.Len)*bs, len(stored)-off)
		if err := db.writeBlocks(stored[off:off+n], e.Start); err != nil {
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

// readValue reads a heap value from the heap, verifies the CRC of its
// stored bytes and decodes them. It bypasses the value cache (Check and
// recovery use it to verify what is on disk; readers that may be served
// from memory call heapValue). The result is owned by the caller.
func (db *DB) readValue(key []byte, p *pointer) ([]byte, error) {
	if p.codec == CodecNone {
		return db.readStored(key, p, make([]byte, p.storedLen))
	}
	var buf []byte
	if p.storedLen <= maxPooledBuf {
		bp := encBufPool.Get().(*[]byte)
		defer encBufPool.Put(bp)
		if uint64(cap(*bp)) < p.storedLen {
			*bp = make([]byte, p.storedLen, max(p.storedLen, uint64(db.geom.BlockSize)))
		}
		buf = (*bp)[:p.storedLen]
	} else {
		buf = make([]byte, p.storedLen)
	}
	stored, err := db.readStored(key, p, buf)
	if err != nil {
		return nil, err
	}
	v, err := decodeValue(p.codec, p.rawLen, stored)
	if err != nil {
		return nil, fmt.Errorf("%w: value of key %q at %v (written at LSN %d): %v value of %d bytes stored in %d does not decode: %v",
			ErrCorrupt, key, p.extents, p.lsn, p.codec, p.rawLen, p.storedLen, err)
	}
	return v, nil
}

// readStored reads the stored bytes of a heap value into buf (of length
// p.storedLen) and verifies their CRC; a read error or a bad CRC goes to
// repairRead (replicas.go), which tries the other replicas.
func (db *DB) readStored(key []byte, p *pointer, buf []byte) ([]byte, error) {
	bs := uint64(db.geom.BlockSize)
	off := uint64(0)
	for _, e := range p.extents {
		n := min(uint64(e.Len)*bs, p.storedLen-off)
		if err := db.heap.ReadAt(buf[off:off+n], e.Start); err != nil {
			return db.repairRead(key, p, buf, fmt.Errorf("heapkv: get %q: %w", key, err))
		}
		off += n
	}
	if got := crcOf(buf); got != p.crc {
		return db.repairRead(key, p, buf, fmt.Errorf("%w: value of key %q at %v (written at LSN %d): checksum %08x, want %08x",
			ErrCorrupt, key, p.extents, p.lsn, got, p.crc))
	}
	return buf, nil
}
