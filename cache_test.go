package heapkv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestValueCacheHitsAndCopies(t *testing.T) {
	db := openTestDB(t, "db", memOptions(vfs.NewMem(), CodecNone))
	val := bytes.Repeat([]byte("0123456789"), 300)
	if err := db.Put([]byte("k"), val); err != nil {
		t.Fatal(err)
	}
	if err := db.Put([]byte("inline"), []byte("small")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		got, err := db.Get([]byte("k"))
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("get %d: %v", i, err)
		}
		got[0] ^= 0xFF // the caller owns the slice: this must not reach the cache
		db.vcache.c.Wait()
		if _, err := db.Get([]byte("inline")); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := db.Stats()
	if s.ValueCacheMisses != 1 || s.ValueCacheHits != 2 || s.ValueCacheBytes < int64(len(val)) {
		t.Fatalf("hits %d misses %d bytes %d; want 2, 1, >= %d", s.ValueCacheHits, s.ValueCacheMisses, s.ValueCacheBytes, len(val))
	}
	// Overwriting drops the entry of the old value.
	if err := db.Put([]byte("k"), val[:2000]); err != nil {
		t.Fatal(err)
	}
	db.vcache.c.Wait()
	if s, _ := db.Stats(); s.ValueCacheBytes != 0 {
		t.Fatalf("cache holds %d bytes after the only cached value was overwritten", s.ValueCacheBytes)
	}
	if got, err := db.Get([]byte("k")); err != nil || !bytes.Equal(got, val[:2000]) {
		t.Fatalf("after overwrite: %v", err)
	}
}

func TestValueCacheDisabled(t *testing.T) {
	o := memOptions(vfs.NewMem(), CodecS2)
	o.ValueCacheSize = -1
	db := openTestDB(t, "db", o)
	if db.vcache != nil {
		t.Fatal("negative ValueCacheSize left a cache")
	}
	val := bytes.Repeat([]byte("abc"), 2000)
	for i := 0; i < 3; i++ {
		if err := db.Put([]byte("k"), val); err != nil {
			t.Fatal(err)
		}
		if got, err := db.Get([]byte("k")); err != nil || !bytes.Equal(got, val) {
			t.Fatalf("get: %v", err)
		}
	}
	if s, _ := db.Stats(); s.ValueCacheHits+s.ValueCacheMisses+s.ValueCacheBytes != 0 {
		t.Fatalf("disabled cache counted: %+v", s)
	}
}

// TestValueCacheStaleEntry makes a heap extent be freed and reused by
// another key, then plants an entry for the old value at the reused block,
// as a ristretto Set of a slow reader could land after the reuse (Sets are
// applied asynchronously, after the delete that the free issued). Get must
// still return the new value.
func TestValueCacheStaleEntry(t *testing.T) {
	db := openTestDB(t, "db", memOptions(vfs.NewMem(), CodecNone))
	old := bytes.Repeat([]byte("old!"), 250) // 1000 bytes: 2 blocks of 512
	if err := db.Put([]byte("victim"), old); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get([]byte("victim")); err != nil {
		t.Fatal(err)
	}
	p1 := heapPointer(t, db, "victim")
	if err := db.Delete([]byte("victim")); err != nil { // synced: the free is released at once
		t.Fatal(err)
	}
	// Write other keys until one lands on the victim's first block.
	var reused string
	var newVal []byte
	for i := 0; i < 10000 && reused == ""; i++ {
		k := fmt.Sprintf("k%d", i)
		v := bytes.Repeat([]byte{byte('a' + i%26)}, 1000)
		if err := db.Put([]byte(k), v); err != nil {
			t.Fatal(err)
		}
		if p := heapPointer(t, db, k); p.extents[0].Start == p1.extents[0].Start {
			reused, newVal = k, v
		}
	}
	if reused == "" {
		t.Fatal("the victim's block was never reused")
	}
	db.vcache.put(&p1, old) // the late Set
	db.vcache.c.Wait()
	if cv, ok := db.vcache.c.Get(p1.extents[0].Start); !ok || cv.lsn != p1.lsn {
		t.Fatal("the stale entry did not make it into the cache; the test proves nothing")
	}
	for i := 0; i < 2; i++ {
		got, err := db.Get([]byte(reused))
		if err != nil || !bytes.Equal(got, newVal) {
			t.Fatalf("get %s over a stale cache entry: %q, %v", reused, got[:min(len(got), 8)], err)
		}
		db.vcache.c.Wait()
	}
}

// raceValue is the value of key k at version v: a header naming both and
// the CRC of the body, then text-like or random bytes (so that s2
// compresses about half the values), 100 to 3000 bytes in all.
func raceValue(k, v int) []byte {
	r := rand.New(rand.NewPCG(uint64(k), uint64(v)))
	n := 100 + r.IntN(2900)
	var body []byte
	if v%2 == 0 {
		body = textValue(r, n)
	} else {
		body = make([]byte, n+8)
		for i := 0; i < n; i += 8 {
			binary.LittleEndian.PutUint64(body[i:], r.Uint64())
		}
		body = body[:n]
	}
	return append([]byte(fmt.Sprintf("k=%03d v=%06d c=%08x|", k, v, crcOf(body))), body...)
}

// parseRaceValue checks a raceValue against its own CRC and returns its key
// and version.
func parseRaceValue(b []byte) (k, v int, err error) {
	const hdr = len("k=000 v=000000 c=00000000|")
	var c uint32
	if len(b) < hdr {
		return 0, 0, fmt.Errorf("value of %d bytes", len(b))
	}
	if _, err := fmt.Sscanf(string(b[:hdr]), "k=%03d v=%06d c=%08x|", &k, &v, &c); err != nil {
		return 0, 0, fmt.Errorf("value %q does not parse", b[:hdr])
	}
	if crcOf(b[hdr:]) != c {
		return k, v, fmt.Errorf("key %d version %d: body does not match its CRC", k, v)
	}
	return k, v, nil
}

// TestValueCacheRace runs writers that overwrite and delete a few keys
// (a small heap whose blocks are freed and reused all the time) against
// readers that check every value they get: it must belong to the key and be
// a version between the last one committed before the Get started and the
// last one started before it returned. A stale cache entry (the old value of
// a key, or another key's value on a reused block) fails this. Run with
// -race. The cache is small so that admission, eviction, and Del on free
// all run concurrently with reads.
func TestValueCacheRace(t *testing.T) {
	const (
		keys    = 64
		writers = 4
		readers = 4
	)
	opsPer := 1200
	if testing.Short() {
		opsPer = 600
	}
	o := memOptions(vfs.NewMem(), CodecS2)
	o.ValueCacheSize = 48 << 10
	o.NoSync = true
	o.NoSyncFlushBytes = 32 << 10
	db := openTestDB(t, "db", o)

	var started, committed [keys]atomic.Int64
	var isDelete [keys][]atomic.Bool
	for k := range isDelete {
		isDelete[k] = make([]atomic.Bool, opsPer+1)
	}
	var stop atomic.Bool
	var failed atomic.Value
	fail := func(err error) {
		failed.CompareAndSwap(nil, err)
		stop.Store(true)
	}

	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 99))
			ver := make([]int, keys)
			for i := 0; i < opsPer && !stop.Load(); i++ {
				k := w + writers*r.IntN(keys/writers)
				ver[k]++
				v := ver[k]
				if v > opsPer {
					continue
				}
				del := r.IntN(5) == 0
				isDelete[k][v].Store(del)
				started[k].Store(int64(v))
				var err error
				switch {
				case del:
					err = db.Delete(kkey(k))
				case r.IntN(8) == 0:
					err = db.Apply(func() *Batch { b := db.NewBatch(); b.Put(kkey(k), raceValue(k, v)); return b }(), &WriteOptions{Sync: true})
				default:
					err = db.Put(kkey(k), raceValue(k, v))
				}
				if err != nil {
					fail(err)
					return
				}
				committed[k].Store(int64(v))
			}
		}()
	}
	var reads atomic.Int64
	var rwg sync.WaitGroup
	for rd := 0; rd < readers; rd++ {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			r := rand.New(rand.NewPCG(uint64(rd), 7))
			for !stop.Load() {
				k := r.IntN(keys)
				lo := int(committed[k].Load())
				got, err := db.Get(kkey(k))
				hi := int(started[k].Load())
				reads.Add(1)
				if errors.Is(err, ErrNotFound) {
					ok := lo == 0
					for v := max(lo, 1); v <= hi && !ok; v++ {
						ok = isDelete[k][v].Load()
					}
					if !ok {
						fail(fmt.Errorf("key %d not found, but versions %d..%d hold no delete", k, lo, hi))
					}
					continue
				}
				if err != nil {
					fail(err)
					return
				}
				gk, gv, err := parseRaceValue(got)
				switch {
				case err != nil:
					fail(fmt.Errorf("key %d: %w", k, err))
				case gk != k:
					fail(fmt.Errorf("key %d: got the value of key %d version %d", k, gk, gv))
				case gv < lo || gv > hi:
					fail(fmt.Errorf("key %d: got version %d, outside %d..%d (stale)", k, gv, lo, hi))
				case isDelete[k][gv].Load():
					fail(fmt.Errorf("key %d: got version %d, which is a delete", k, gv))
				}
				if r.IntN(16) == 0 {
					got[len(got)-1] ^= 1 // callers own what Get returns
				}
			}
		}()
	}
	wg.Wait()
	// Let the readers hit the final state a while.
	time.Sleep(50 * time.Millisecond)
	stop.Store(true)
	rwg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	s, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reads %d: cache hits %d misses %d evictions %d bytes %d; heap %d segments, %d values written (%d compressed)",
		reads.Load(), s.ValueCacheHits, s.ValueCacheMisses, s.ValueCacheEvictions, s.ValueCacheBytes,
		s.HeapSegments, s.HeapValuesWritten, s.HeapValuesCompressed)
	if s.ValueCacheHits == 0 || s.ValueCacheEvictions == 0 || s.HeapValuesCompressed == 0 {
		t.Fatalf("the run did not exercise hits, evictions and compression: %+v", s)
	}
	// Blocks were reused: more was written than the heap has room for
	// (stored bytes / block size undercounts the blocks written).
	blocksWritten := s.HeapWrittenStored / 512
	if heapBlocks := int64(s.HeapSegments) * 64; blocksWritten <= heapBlocks {
		t.Fatalf("wrote about %d blocks into a heap of %d: too little reuse to test", blocksWritten, heapBlocks)
	}
	for k := 0; k < keys; k++ {
		v := int(committed[k].Load())
		got, err := db.Get(kkey(k))
		switch {
		case v == 0 || isDelete[k][v].Load():
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("final key %d (version %d deleted): %v", k, v, err)
			}
		case err != nil || !bytes.Equal(got, raceValue(k, v)):
			t.Fatalf("final key %d version %d: %v", k, v, err)
		}
	}
}

func kkey(k int) []byte { return []byte(fmt.Sprintf("key-%03d", k)) }

// TestValueCacheDropsOnlyCached overwrites values of which only some were
// read into the cache: the commit that frees them deletes the cached
// entries and queues nothing for the others (a queued delete is a channel
// send and an allocation in ristretto, on the apply path of every
// overwrite).
func TestValueCacheDropsOnlyCached(t *testing.T) {
	db := openTestDB(t, "db", memOptions(vfs.NewMem(), CodecNone))
	val := bytes.Repeat([]byte("v"), 1500)
	const keys = 40
	for i := range keys {
		if err := db.Put(fmt.Appendf(nil, "k%02d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < keys; i += 4 {
		if _, err := db.Get(fmt.Appendf(nil, "k%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	db.vcache.c.Wait()
	cached := 0
	for i := range keys {
		p := heapPointer(t, db, fmt.Sprintf("k%02d", i))
		if _, ok := db.vcache.c.GetTTL(p.extents[0].Start); ok {
			cached++
		}
	}
	if cached == 0 {
		t.Fatal("no value made it into the cache; the test proves nothing")
	}
	before := db.vcache.deletes.Load()
	for i := range keys {
		if err := db.Put(fmt.Appendf(nil, "k%02d", i), val[:1400]); err != nil {
			t.Fatal(err)
		}
	}
	if got := db.vcache.deletes.Load() - before; got != int64(cached) {
		t.Fatalf("overwriting %d values, %d of them cached, issued %d deletes", keys, cached, got)
	}
	db.vcache.c.Wait()
	if s, _ := db.Stats(); s.ValueCacheBytes != 0 {
		t.Fatalf("cache holds %d bytes after every cached value was overwritten", s.ValueCacheBytes)
	}
}
