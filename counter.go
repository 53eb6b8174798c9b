package heapkv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"

	"github.com/heapkv/heapkv/internal/pace"
)

// ErrNotCounter is returned by Increment when the key holds a value that
// is not a counter (8 bytes).
var ErrNotCounter = errors.New("heapkv: value is not a counter")

// counterStripes serialises Increments of keys that hash alike: an
// Increment holds its key's stripe from its read to its commit, so
// Increments of one key never conflict with each other.
const counterStripes = 64

var counterSeed = maphash.MakeSeed()

// counterLocks are the stripes; a DB keeps them in db.counters.
type counterLocks [counterStripes]sync.Mutex

// Increment adds delta to the counter stored under key and returns the new
// value. A counter is a signed 64-bit integer stored as 8 bytes, little
// endian; a missing key counts as 0. Concurrent Increments of one key
// never retry each other (they take turns on a lock of the key's); a Put
// or transaction that writes the key meanwhile makes the Increment read
// again, as a conflicting transaction would. The write has the
// database's default durability.
func (db *DB) Increment(key []byte, delta int64) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	mu := &db.counters[maphash.Bytes(counterSeed, key)%counterStripes]
	mu.Lock()
	defer mu.Unlock()
	for attempt := 0; ; attempt++ {
		var n int64
		err := db.Update(func(txn *Txn) error {
			v, err := txn.Get(key)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			case len(v) != 8:
				return fmt.Errorf("%w: key %q holds %d bytes", ErrNotCounter, key, len(v))
			default:
				n = int64(binary.LittleEndian.Uint64(v))
			}
			n += delta
			return txn.Put(key, binary.LittleEndian.AppendUint64(nil, uint64(n)))
		})
		if errors.Is(err, ErrConflict) && attempt < 100 {
			continue // another writer of the key, not an Increment
		}
		return n, err
	}
}

// DeleteRangeOptions tune DeleteRange and DropPrefix; nil means defaults.
type DeleteRangeOptions struct {
	// KeysPerSecond limits how fast keys are deleted; 0 means no limit.
	KeysPerSecond int64
}

// deleteBatchKeys is how many deletions one DeleteRange batch commits.
const deleteBatchKeys = 1000

// DeleteRange deletes every key k with start <= k < end (a nil end: no
// upper bound) and returns how many it deleted. It deletes in batches of
// committed writes, each freeing its values' heap blocks: it is not
// atomic (a reader may see part of the range gone; a key written into the
// range meanwhile may survive), and a crash leaves a prefix of the range
// deleted, which running DeleteRange again finishes. It stops with ctx's
// error if ctx ends.
func (db *DB) DeleteRange(ctx context.Context, start, end []byte, opts *DeleteRangeOptions) (int64, error) {
	var o DeleteRangeOptions
	if opts != nil {
		o = *opts
	}
	pacer := pace.New(o.KeysPerSecond)
	var deleted int64
	from := start
	for {
		keys, err := db.rangeKeys(from, end, deleteBatchKeys)
		if err != nil || len(keys) == 0 {
			return deleted, err
		}
		if err := pacer.Wait(ctx, int64(len(keys))); err != nil {
			return deleted, err
		}
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		b := db.NewBatch()
		for _, k := range keys {
			b.Delete(k)
		}
		if err := db.Apply(b, nil); err != nil {
			return deleted, fmt.Errorf("heapkv: delete range: %w", err)
		}
		deleted += int64(len(keys))
		from = append(keys[len(keys)-1], 0) // the next key after the last one
	}
}

// DropPrefix deletes every key that starts with prefix (see DeleteRange);
// an empty prefix deletes every key.
func (db *DB) DropPrefix(ctx context.Context, prefix []byte, opts *DeleteRangeOptions) (int64, error) {
	return db.DeleteRange(ctx, prefix, prefixSuccessor(prefix), opts)
}

// rangeKeys returns up to n keys k with from <= k < end (nil end: none).
func (db *DB) rangeKeys(from, end []byte, n int) ([][]byte, error) {
	it, err := db.NewIter(&IterOptions{LowerBound: from, UpperBound: end})
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for ok := it.First(); ok && len(keys) < n; ok = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	return keys, it.Close()
}
