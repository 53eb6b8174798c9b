package heapkv

import "fmt"

// SetNoAutoAttach makes Open leave stale replicas alone, so that a test
// decides when to attach them.
func SetNoAutoAttach(o *Options) { o.noAutoAttach = true }

// ValueBlocks returns the heap blocks that hold key's value, in order (nil
// for an inline value).
func ValueBlocks(db *DB, key []byte) ([]uint64, error) {
	raw, closer, err := db.index.Get(key)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	e, err := decodeEntry(raw, db.geom)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", key, err)
	}
	var out []uint64
	if e.isHeap {
		for _, x := range e.ptr.extents {
			for b := x.Start; b < x.End(); b++ {
				out = append(out, b)
			}
		}
	}
	return out, nil
}

// ValueStoredLen returns how many bytes of its blocks key's heap value
// occupies (0 for an inline value): reads stop there, so a replica cut
// short inside a value's last block damages the value only if the cut
// comes before its last stored byte.
func ValueStoredLen(db *DB, key []byte) (uint64, error) {
	raw, closer, err := db.index.Get(key)
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	e, err := decodeEntry(raw, db.geom)
	if err != nil {
		return 0, fmt.Errorf("key %q: %w", key, err)
	}
	if !e.isHeap {
		return 0, nil
	}
	return e.ptr.storedLen, nil
}

// SetResyncSaveBytes makes a resync save its progress (by a checkpoint)
// after every n bytes copied.
func SetResyncSaveBytes(o *Options, n int64) { o.resyncSaveBytes = n }
