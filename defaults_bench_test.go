package heapkv_test

// Benchmarks behind the defaults recorded in ARCHITECTURE.md ("Why the
// defaults"). Run:
//
//	go test -run '^$' -bench 'Defaults' -benchtime 20000x -count 3 .

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/heapkv/heapkv"
)

// dirBytes sums the sizes of the regular files under dir.
func dirBytes(tb testing.TB, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkDefaultsInlineThreshold writes values of one size either inline
// in the index or to the heap, then reads them back, reporting write and
// read cost and space per value.
func BenchmarkDefaultsInlineThreshold(b *testing.B) {
	for _, size := range []int{128, 200, 256, 384, 512, 1024, 2048, 3072} {
		for _, mode := range []string{"inline", "heap"} {
			b.Run(fmt.Sprintf("value=%d/store=%s", size, mode), func(b *testing.B) {
				opts := &heapkv.Options{NoSync: true, InlineThreshold: -1}
				if mode == "inline" {
					opts.InlineThreshold = heapkv.MaxValueSize
				}
				benchPutGet(b, opts, size, 64)
			})
		}
	}
}

// BenchmarkDefaultsSegmentSize writes 4 KiB values with 64 writers for
// several segment sizes.
func BenchmarkDefaultsSegmentSize(b *testing.B) {
	for _, seg := range []int64{1 << 20, 8 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("segment=%dMiB", seg>>20), func(b *testing.B) {
			benchPutGet(b, &heapkv.Options{NoSync: true, SegmentSize: seg}, 4096, 64)
		})
	}
}

func benchPutGet(b *testing.B, opts *heapkv.Options, size, writers int) {
	dir := b.TempDir()
	db := openTestDB(b, dir, opts)
	// Values are windows of a random pool, so they do not compress.
	pool := make([]byte, 1<<20+size)
	for i := range pool {
		pool[i] = byte(rand.Uint32())
	}
	key := func(i uint64) []byte {
		var k [16]byte
		binary.BigEndian.PutUint64(k[:], i*0x9E3779B97F4A7C15)
		binary.BigEndian.PutUint64(k[8:], i)
		return k[:]
	}
	var next atomic.Uint64
	b.SetBytes(int64(size))
	b.SetParallelism(max(1, writers/runtimeProcs()))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			off := int(i*7919) % (1 << 20)
			if err := db.Put(key(i), pool[off:off+size]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := db.Sync(); err != nil {
		b.Fatal(err)
	}
	n := next.Load()
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(dirBytes(b, dir))/float64(n), "disk-B/value")
	// Read everything back once after reopening (cold index cache).
	db = openTestDB(b, dir, opts)
	start := nowNanos()
	for i := uint64(1); i <= n; i++ {
		if _, err := db.Get(key(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(nowNanos()-start)/float64(n), "get-ns/op")
}

// BenchmarkDefaultsBlockSize stores values in the heap with several block
// sizes, to weigh space lost to rounding against write cost.
func BenchmarkDefaultsBlockSize(b *testing.B) {
	for _, size := range []int{1140, 1500, 3000, 4096, 4100, 16384} {
		for _, bs := range []int{128, 256, 512, 1024, 4096} {
			b.Run(fmt.Sprintf("value=%d/block=%d", size, bs), func(b *testing.B) {
				benchPutGet(b, &heapkv.Options{NoSync: true, InlineThreshold: -1, BlockSize: bs, SegmentSize: int64(bs) * 2048}, size, 64)
			})
		}
	}
}
