package heapkv_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heapkv/heapkv"
)

func TestScan(t *testing.T) {
	db := openTxnDB(t)
	want := map[string][]byte{}
	for i := range 50 {
		k := fmt.Sprintf("p%d/%03d", i%3, i)
		want[k] = val(k, i*60)
		if err := db.Put([]byte(k), want[k]); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	var keys []string
	for k, v := range db.Scan([]byte("p1/"), &err) {
		if !bytes.Equal(v, want[string(k)]) {
			t.Fatalf("v = %.64q, want %.64q", v, want[string(k)])
		}
		keys = append(keys, string(k))
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 17 {
		t.Fatalf("len(keys) = %d, want %d", len(keys), 17)
	}
	if !slices.IsSorted(keys) {
		t.Fatal("slices.IsSorted(keys) is false")
	}
	n := 0
	for range db.Scan(nil, &err) {
		if n++; n == 5 {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(txn *heapkv.Txn) error {
		n := 0
		for range txn.Scan([]byte("p2"), &err) {
			n++
		}
		if n != 16 {
			t.Fatalf("n = %v, want %v", n, 16)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.OpenIterators != 0 {
		t.Fatalf("st.OpenIterators = %v, want 0", st.OpenIterators)
	} // a broken loop closed its iterator
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for range db.Scan(nil, &err) {
		t.Fatal("yielded after Close")
	}
	if !errors.Is(err, heapkv.ErrClosed) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrClosed)
	}
}

// TestScanCorruptValue: a damaged heap value ends a scan with ErrCorrupt
// naming the key; a keys-only walk never reads it.
func TestScanCorruptValue(t *testing.T) {
	fs, marker := corruptFixture(t, 3)
	heap := readVFSFile(t, fs, fs.PathJoin(corruptDir, "heap"))
	at := bytes.Index(heap, marker[:100])
	if at < 0 {
		t.Fatalf("at = %v, want >= 0 = %v", at, 0)
	}
	flipFileBit(t, fs, fs.PathJoin(corruptDir, "heap"), at+len(marker)/2)
	db := openTestDBNoCheck(t, corruptDir, faultOptions(fs))

	var serr error
	var seen []string
	for k := range db.Scan(nil, &serr) {
		seen = append(seen, string(k))
	}
	if !errors.Is(serr, heapkv.ErrCorrupt) {
		t.Fatalf("serr = %v, want %v", serr, heapkv.ErrCorrupt)
	}
	if !strings.Contains(serr.Error(), "marker") {
		t.Fatalf("Scan error %q does not name the key", serr)
	}
	if slices.Contains(seen, "marker") {
		t.Fatalf("Scan yielded the corrupt key: %q", seen)
	}

	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	if !it.SeekGE([]byte("marker")) {
		t.Fatal("it.SeekGE([]byte(\"marker\")) is false")
	}
	_, err = it.Value()
	if !errors.Is(err, heapkv.ErrCorrupt) {
		t.Fatalf("err = %v, want %v", err, heapkv.ErrCorrupt)
	}
	if !it.Prev() {
		t.Fatal("it.Prev() is false")
	} // moves on; the error is kept
	_, err = it.Value()
	if err != nil {
		t.Fatal(err)
	}
	if err := it.Error(); !errors.Is(err, heapkv.ErrCorrupt) {
		t.Fatalf("it.Error() = %v, want %v", err, heapkv.ErrCorrupt)
	}
	if !errors.Is(it.Close(), heapkv.ErrCorrupt) {
		t.Fatal("Close did not return the iterator's ErrCorrupt")
	}
	if n <= 30 {
		t.Fatalf("n = %v, want > 30 = %v", n, 30)
	}
}

// TestIteratorReadahead: forward scans that read every value switch to
// readahead (batches read in block order, coalesced, in parallel); values
// must be exactly those Get returns, for values split over several
// segments, compressed values, inline values in between, and scans that
// skip values or jump.
func TestIteratorReadahead(t *testing.T) {
	for _, codec := range []heapkv.Codec{heapkv.CodecNone, heapkv.CodecS2} {
		opts := &heapkv.Options{
			BlockSize:       512,
			SegmentSize:     64 * 512,
			InlineThreshold: 64,
			NoSync:          true,
			Compression:     codec,
			Logger:          txnLogger,
		}
		db := openTestDB(t, t.TempDir(), opts)
		want := map[string][]byte{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 3))
				for i := range 150 {
					k := fmt.Sprintf("k%04d", rng.IntN(400))
					n := rng.IntN(3000)
					switch rng.IntN(10) {
					case 0:
						n = 40<<10 + rng.IntN(20<<10) // more than a segment
					case 1:
						n = rng.IntN(64) // inline
					}
					v := make([]byte, n)
					for j := range v {
						v[j] = byte(j / (1 + i%7)) // compressible, distinct
					}
					v = append(v[:0:0], v...)
					if len(v) > 8 {
						binary.LittleEndian.PutUint64(v, rng.Uint64())
					}
					mu.Lock()
					if err := db.Put([]byte(k), v); err != nil {
						mu.Unlock()
						t.Error(err) // not Fatal: this is not the test's goroutine
						return
					}
					want[k] = v
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		var serr error
		n := 0
		for k, v := range db.Scan(nil, &serr) {
			if !bytes.Equal(v, want[string(k)]) {
				t.Fatalf("codec %d: scan: value of %s differs (%d bytes, want %d)", codec, k, len(v), len(want[string(k)]))
			}
			n++
		}
		if serr != nil {
			t.Fatal(serr)
		}
		if n != len(want) {
			t.Fatalf("n = %v, want %v", n, len(want))
		}

		rng := rand.New(rand.NewPCG(9, 9))
		it, err := db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			if rng.IntN(40) == 0 {
				k := randIterKey(rng)
				it.SeekGE([]byte("k" + k))
				if !it.Valid() {
					break
				}
			}
			if rng.IntN(10) == 0 {
				continue // skip a value
			}
			if rng.IntN(2) == 0 {
				checkIterView(t, it, want[string(it.Key())], fmt.Sprintf("codec %d", codec), nil)
				continue
			}
			v, err := it.Value()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(v, want[string(it.Key())]) {
				t.Fatalf("codec %d: iterator: value of %s differs", codec, it.Key())
			}
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
