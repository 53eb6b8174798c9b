package heapkv_test

// The concurrent model test: writers and readers at once, values that
// check themselves, and a model per writer.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

// modelSelfValue builds a value that names its key and carries its own
// CRC, so a concurrent reader can tell a torn or foreign value from a good
// one without a shared model.
func modelSelfValue(rng *rand.Rand, key string, n int) []byte {
	body := modelValue(rng, n)
	b := make([]byte, 0, len(key)+1+len(body)+4)
	b = append(b, key...)
	b = append(b, '|')
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

func modelSelfCheck(key string, v []byte) error {
	if len(v) < len(key)+5 || string(v[:len(key)]) != key || v[len(key)] != '|' {
		return fmt.Errorf("value of %q does not name its key", key)
	}
	body, sum := v[:len(v)-4], v[len(v)-4:]
	if binary.LittleEndian.Uint32(sum) != crc32.ChecksumIEEE(body) {
		return fmt.Errorf("value of %q (%d bytes) fails its checksum", key, len(v))
	}
	return nil
}

// TestModelConcurrent: writers on disjoint key ranges (puts, deletes,
// batches, NoSync writes), readers (Get, Scan, snapshots) and a
// checkpointer run at once; every value read must be whole and belong to
// its key, snapshots must stay frozen, and at the end the database must
// equal the union of the writers' models, pass Check, and survive a reopen.
func TestModelConcurrent(t *testing.T) {
	const writers, readers, keysPer = 4, 2, 24
	ops := 1000
	if testing.Short() {
		ops = 300
	}
	opts := heapkv.Options{BlockSize: 128, SegmentSize: 64 * 128, InlineThreshold: 64, Cursors: 3,
		IndexMemTableSize: 1 << 20, LogSegmentSize: 64 << 10, CheckpointLogBytes: 256 << 10, Logger: modelLogger}
	heapkv.SetFS(&opts, vfs.NewMem())
	heapkv.CrossCheckKeyFilter(&opts)
	heapkv.CrossCheckEntryCache(&opts)
	db := openTestDB(t, "db", &opts)
	key := func(w, i int) string { return fmt.Sprintf("w%d-%03d", w, i) }
	models := make([]map[string][]byte, writers)
	var all []string
	for w := range writers {
		for i := range keysPer {
			all = append(all, key(w, i))
		}
	}

	var wg sync.WaitGroup
	errc := make(chan error, writers+readers+1)
	stop := make(chan struct{})
	for w := range writers {
		models[w] = map[string][]byte{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			model := models[w]
			for range ops {
				k := key(w, rng.IntN(keysPer))
				var err error
				switch r := rng.IntN(10); {
				case r < 5:
					v := modelSelfValue(rng, k, modelSize(rng, 512))
					err = db.Put([]byte(k), v)
					model[k] = v
				case r < 6:
					err = db.Delete([]byte(k))
					delete(model, k)
				default:
					b := db.NewBatch()
					next := maps.Clone(model)
					for range 1 + rng.IntN(5) {
						k := key(w, rng.IntN(keysPer))
						if rng.IntN(4) == 0 {
							b.Delete([]byte(k))
							delete(next, k)
						} else {
							v := modelSelfValue(rng, k, modelSize(rng, 512))
							b.Put([]byte(k), v)
							next[k] = v
						}
					}
					err = db.Apply(b, &heapkv.WriteOptions{Sync: r < 8})
					model = next
				}
				if err != nil {
					errc <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				// Read-your-writes for this writer's own key.
				got, err := db.Get([]byte(k))
				if want, ok := model[k]; ok && (err != nil || !bytes.Equal(got, want)) {
					errc <- fmt.Errorf("writer %d: Get(%q) after its write = %d bytes, %v; want %d bytes", w, k, len(got), err, len(want))
					return
				} else if !ok && !errors.Is(err, heapkv.ErrNotFound) {
					errc <- fmt.Errorf("writer %d: Get(%q) after delete: %v", w, k, err)
					return
				}
			}
			models[w] = model
		}()
	}
	var rwg sync.WaitGroup
	for r := range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := modelConcurrentRead(db, rng, all, n); err != nil {
					errc <- fmt.Errorf("reader %d: %w", r, err)
					return
				}
			}
		}()
	}
	rwg.Add(1)
	go func() { // checkpoints and syncs meanwhile
		defer rwg.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			var err error
			if n%3 == 0 {
				err = db.Checkpoint()
			} else {
				err = db.Sync()
			}
			if err != nil {
				errc <- fmt.Errorf("checkpointer: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	rwg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	union := map[string][]byte{}
	for _, mm := range models {
		maps.Copy(union, mm)
	}
	m := &modelDB{t: t, name: "concurrent", dir: "db", opts: opts, db: db, model: union, keys: all}
	m.verifyAll("after the concurrent run")
	m.reopen()
	if err := m.db.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writers x %d ops, %d readers: %d keys at the end", writers, ops, readers, len(union))
}

// modelConcurrentRead does one reader step: a Get, a Scan, or a snapshot
// whose reads must not change while writers run.
func modelConcurrentRead(db *heapkv.DB, rng *rand.Rand, all []string, n int) error {
	switch n % 8 {
	case 0: // a snapshot stays frozen
		s, err := db.NewSnapshot()
		if err != nil {
			return err
		}
		defer s.Close()
		keys := make([]string, 6)
		first := make([][]byte, len(keys))
		for i := range keys {
			keys[i] = all[rng.IntN(len(all))]
			v, err := s.Get([]byte(keys[i]))
			if err != nil && !errors.Is(err, heapkv.ErrNotFound) {
				return fmt.Errorf("snapshot Get(%q): %w", keys[i], err)
			}
			first[i] = v
		}
		for range 3 {
			for i, k := range keys {
				v, err := s.Get([]byte(k))
				if err != nil && !errors.Is(err, heapkv.ErrNotFound) {
					return fmt.Errorf("snapshot Get(%q): %w", k, err)
				}
				if !bytes.Equal(v, first[i]) {
					return fmt.Errorf("snapshot Get(%q) changed from %d to %d bytes while open", k, len(first[i]), len(v))
				}
			}
		}
		return nil
	case 1: // a full scan: ordered, and every value whole
		var err error
		prev := ""
		for k, v := range db.Scan(nil, &err) {
			if string(k) <= prev {
				return fmt.Errorf("scan out of order: %q after %q", k, prev)
			}
			prev = string(k)
			if err := modelSelfCheck(string(k), v); err != nil {
				return fmt.Errorf("scan: %w", err)
			}
		}
		return err
	default:
		k := all[rng.IntN(len(all))]
		v, err := db.Get([]byte(k))
		if errors.Is(err, heapkv.ErrNotFound) {
			return nil
		} else if err != nil {
			return fmt.Errorf("Get(%q): %w", k, err)
		}
		return modelSelfCheck(k, v)
	}
}

// TestModelOverwriteSpace: overwriting values gives their blocks back
// without any garbage collection. N heap values are written and then
// overwritten five times (sizes change every round, so blocks fragment);
// after a Sync the heap may hold at most 1.3x the live blocks plus a few
// segments (one per cursor, plus two), where an allocator that never
// reused freed blocks would hold six times the live data. With synced
// writes the heap file must stay within the same bound. With NoSync writes
// freed blocks wait until a sync makes the freeing records durable
// (invariant 5a), so the file may grow meanwhile, but by no more than about
