package heapkv

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/mirror"
)

// The read path. Get pins the applied LSN (so no block it may read is
// reused meanwhile: pins.go), reads the key's index entry and, for a heap
// value, asks the value cache (cache.go) and else reads the blocks from
// the first in-sync heap replica and verifies their CRC. A copy that cannot
// be read or fails its CRC is read from the other replicas, and the bad
// copies are rewritten from a good one (repairRead).

// Get returns a copy of the value stored under key, or an error wrapping
// ErrNotFound if there is none.
func (db *DB) Get(key []byte) (value []byte, err error) {
	err = db.lookup(key, func(raw []byte) error {
		value, err = db.entryValue(key, raw)
		return err
	})
	return value, err
}

// lookup calls fn with key's raw index entry, from the index-entry cache
// or the index, with the applied LSN pinned (so no heap block the entry
// names is reused until fn returns). raw is valid only inside fn. It
// returns an error wrapping ErrNotFound if key has no entry.
func (db *DB) lookup(key []byte, fn func(raw []byte) error) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	db.stats.gets.Add(1)
	tok := db.pins.pin(db.applied.Load())
	defer db.pins.unpin(tok)

	ec := db.ecache
	var etok entryToken
	if ec != nil {
		bp := encBufPool.Get().(*[]byte)
		defer encBufPool.Put(bp)
		if raw, ok := ec.get(key, (*bp)[:0]); ok {
			*bp = raw
			if db.opts.crossCheckEntryCache {
				if err := db.crossCheckEntry(key); err != nil {
					return err
				}
			}
			if len(raw) == 0 {
				return ErrNotFound // deleted (entryCache.store)
			}
			return fn(raw)
		}
		etok = ec.token(key)
	}
	raw, closer, err := db.index.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return ErrNotFound
	} else if err != nil {
		return indexError(fmt.Sprintf("get %q", key), err)
	}
	defer closer.Close()
	if ec != nil {
		ec.fill(key, raw, etok)
	}
	return fn(raw)
}

// errEntryCacheStale is what Get returns in the tests' cross-check mode
// when a cached entry differs from the index.
var errEntryCacheStale = errors.New("heapkv: index-entry cache differs from the index")

// crossCheckEntry compares key's cached entry with the index's, with no
// write to its shard able to begin meanwhile (Options.crossCheckEntryCache).
func (db *DB) crossCheckEntry(key []byte) error {
	return db.ecache.check(key, func(cached []byte, found bool) error {
		if !found {
			return nil // evicted since the hit
		}
		raw, closer, err := db.index.Get(key)
		if errors.Is(err, pebble.ErrNotFound) && len(cached) == 0 {
			return nil // a delete's entry: the index holds none
		}
		if err != nil {
			return fmt.Errorf("%w: key %q: cached %x, index: %w", errEntryCacheStale, key, cached, err)
		}
		defer closer.Close()
		if !bytes.Equal(raw, cached) {
			return fmt.Errorf("%w: key %q: cached %x, index %x", errEntryCacheStale, key, cached, raw)
		}
		return nil
	})
}

// entryValue returns a copy of the value an index entry holds, reading a
// heap value through the value cache (verified against its CRC).
func (db *DB) entryValue(key, raw []byte) ([]byte, error) {
	bp := getExtentBuf()
	var e entry
	err := db.decodeEntryTo(&e, key, raw, *bp)
	defer putExtentBuf(bp, e.ptr.extents)
	if err != nil {
		return nil, err
	}
	if !e.isHeap {
		return append([]byte{}, e.inline...), nil
	}
	return db.heapValue(key, &e.ptr)
}

// heapValue returns the value p points at, from the value cache if it
// holds it, else from the heap (then offering it to the cache); a value
// stored uncompressed is read straight from the heap's map while there is
// one (refinement 21). The result is owned by the caller.
func (db *DB) heapValue(key []byte, p *pointer) ([]byte, error) {
	vc := db.vcache
	if vc == nil || (p.codec == CodecNone && db.heap.Mapped()) {
		// A value stored as it is read from the map for the price of a
		// cache hit's copy, and the page cache holds it once.
		return db.loadValue(key, p)
	}
	if v, ok := vc.get(p); ok {
		return v, nil
	}
	v, err := db.loadValue(key, p)
	if err != nil {
		return nil, err
	}
	vc.put(p, v)
	return v, nil
}

// readValue reads a heap value from the heap with pread, verifies the CRC
// of its stored bytes and decodes them. It bypasses the value cache and the
// heap's memory map (Check and recovery use it to verify what is on disk;
// readers call heapValue or loadValue). The result is owned by the caller.
func (db *DB) readValue(key []byte, p *pointer) ([]byte, error) {
	return db.readValueVia(key, p, db.heap.ReadAt)
}

// loadValue is readValue for readers: through the heap's memory map when
// there is one (mirror.Set.ReadMapped), which falls back to pread.
func (db *DB) loadValue(key []byte, p *pointer) ([]byte, error) {
	if p.codec != CodecNone {
		return db.readValueVia(key, p, db.heap.ReadMapped)
	}
	// Appended extent by extent to memory the runtime did not zero
	// (valueBuf): a value costs one pass over its bytes, not two (a make
	// cost 6% of the CPU of a Get of 16 KiB). decodeEntry checked that the
	// extents hold exactly storedLen bytes' blocks.
	v := valueBuf(int(p.storedLen))
	bs := uint64(db.geom.BlockSize)
	for _, e := range p.extents {
		n := min(uint64(e.Len)*bs, p.storedLen-uint64(len(v)))
		var err error
		if v, err = db.heap.AppendMapped(v, e.Start, int(n)); err != nil {
			return db.repairRead(key, p, make([]byte, p.storedLen), fmt.Errorf("heapkv: get %q: %w", key, err))
		}
	}
	return db.verifyStored(key, p, v)
}

// readValueVia is readValue reading the heap with read.
func (db *DB) readValueVia(key []byte, p *pointer, read func(p []byte, block uint64) error) ([]byte, error) {
	if p.codec == CodecNone {
		return db.readStored(key, p, make([]byte, p.storedLen), read)
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
	stored, err := db.readStored(key, p, buf, read)
	if err != nil {
		return nil, err
	}
	v, err := decodeValue(p.codec, p.rawLen, stored)
	if err != nil {
		return nil, fmt.Errorf("%w: value of key %q at %v (written at LSN %d): %v value of %d bytes stored in %d does not decode: %w",
			ErrCorrupt, key, p.extents, p.lsn, p.codec, p.rawLen, p.storedLen, err)
	}
	return v, nil
}

// readStored reads the stored bytes of a heap value into buf (of length
// p.storedLen) and verifies their CRC; a read error or a bad CRC goes to
// repairRead, which tries the other replicas.
func (db *DB) readStored(key []byte, p *pointer, buf []byte, read func(p []byte, block uint64) error) ([]byte, error) {
	bs := uint64(db.geom.BlockSize)
	off := uint64(0)
	for _, e := range p.extents {
		n := min(uint64(e.Len)*bs, p.storedLen-off)
		if err := read(buf[off:off+n], e.Start); err != nil {
			return db.repairRead(key, p, buf, fmt.Errorf("heapkv: get %q: %w", key, err))
		}
		off += n
	}
	return db.verifyStored(key, p, buf)
}

// verifyStored returns buf, the stored bytes of p just read, if they match
// p's CRC, else what repairRead finds on the other replicas.
func (db *DB) verifyStored(key []byte, p *pointer, buf []byte) ([]byte, error) {
	if got := crcOf(buf); got != p.crc {
		return db.repairRead(key, p, buf, fmt.Errorf("%w: value of key %q at %v (written at LSN %d): checksum %08x, want %08x",
			ErrCorrupt, key, p.extents, p.lsn, got, p.crc))
	}
	return buf, nil
}

// repairRead is readValue's way out when the first in-sync replica's copy
// of a value cannot be read or fails its checksum: it reads the other
// in-sync replicas, returns (in buf, of length p.storedLen) the first copy
// whose checksum matches, and rewrites every bad copy with it. With no good
// copy the error wraps ErrCorrupt (or is the read error, if no copy could
// be read at all): never wrong bytes. With a single in-sync replica it
// returns cause.
func (db *DB) repairRead(key []byte, p *pointer, buf []byte, cause error) ([]byte, error) {
	if db.heap.InSync() < 2 {
		return nil, cause
	}
	data, res, err := db.readCopies(p, false)
	if err != nil {
		if len(res.Unreadable) == res.Copies && res.Copies > 0 {
			return nil, fmt.Errorf("heapkv: get %q: every copy is unreadable: %w", key, err)
		}
		return nil, fmt.Errorf("%w: value of key %q at %v (written at LSN %d): no replica holds a good copy (%w); first error: %w",
			ErrCorrupt, key, p.extents, p.lsn, err, cause)
	}
	db.stats.readRepairs.Add(int64(len(res.Repaired)))
	db.logger.Warn("served a heap value from another replica", "key", fmt.Sprintf("%q", key), "cause", cause,
		"source", res.Source, "repaired", fmt.Sprint(res.Repaired))
	copy(buf, data)
	return buf[:p.storedLen], nil
}

// readCopies reads the blocks of p, verified against its checksum, through
// mirror.ReadVerified (every in-sync copy if all). The caller must pin p.
func (db *DB) readCopies(p *pointer, all bool) ([]byte, mirror.Verified, error) {
	ranges := make([]mirror.Range, len(p.extents))
	total := 0
	for i, e := range p.extents {
		ranges[i] = mirror.Range{Block: e.Start, Blocks: int(e.Len)}
		total += int(e.Len)
	}
	buf := make([]byte, total*db.geom.BlockSize)
	if uint64(len(buf)) < p.storedLen {
		return nil, mirror.Verified{Source: -1}, fmt.Errorf("%w: pointer of %d bytes in %d blocks", ErrCorrupt, p.storedLen, total)
	}
	check := func(b []byte) bool { return crcOf(b[:p.storedLen]) == p.crc }
	res, err := db.heap.ReadVerified(buf, ranges, check, all)
	return buf, res, err
}

// verifyValue checks that a heap value is intact, on every in-sync
// replica: bad copies are repaired from a good one. Recovery uses it for
// values of records the log does not prove durable.
func (db *DB) verifyValue(key []byte, p *pointer) error {
	if db.heap.InSync() < 2 {
		_, err := db.readValue(key, p)
		return err
	}
	if _, _, err := db.readCopies(p, true); err != nil {
		return fmt.Errorf("%w: value of key %q at %v (written at LSN %d): %w", ErrCorrupt, key, p.extents, p.lsn, err)
	}
	return nil
}
