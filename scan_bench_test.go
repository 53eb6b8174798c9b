package heapkv_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/heapkv/heapkv"
)

// BenchmarkScan runs YCSB E's scans: seek to a random key, read the next
// 50 values, close. It reports the cost per value read. The values, 100,000
// of 1,140 bytes (more than a processor's caches hold), lie in key order
// (clustered: as Compact with Cluster leaves them) or apart (scattered:
// written in a random key order, as YCSB loads them). Run:
//
//	go test -run '^$' -bench Scan -count 6 .
func BenchmarkScan(b *testing.B) {
	for _, layout := range []string{"clustered", "scattered"} {
		size := 1140
		b.Run(fmt.Sprintf("%dB/%s", size, layout), func(b *testing.B) {
			db := heapkv.OpenTestDB(b, b.TempDir(), &heapkv.Options{NoSync: true})
			const keys, length = 100_000, 50
			val := make([]byte, size)
			for _, k := range rand.New(rand.NewPCG(3, 4)).Perm(keys) {
				val[0] = byte(k)
				if err := db.Put(fmt.Appendf(nil, "user%08d", k), val); err != nil {
					b.Fatal(err)
				}
			}
			if layout == "clustered" {
				if _, err := db.Compact(b.Context(), &heapkv.CompactOptions{Cluster: true}); err != nil {
					b.Fatal(err)
				}
			}
			r := rand.New(rand.NewPCG(1, 2))
			var sum int
			b.ResetTimer()
			for range b.N {
				start := fmt.Appendf(nil, "user%08d", r.IntN(keys-length))
				it, err := db.NewIter(&heapkv.IterOptions{LowerBound: start})
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for ok := it.SeekGE(start); ok && n < length; ok = it.Next() {
					v, err := it.Value()
					if err != nil {
						b.Fatal(err)
					}
					sum += int(v[0])
					n++
				}
				if err := it.Close(); err != nil || n != length {
					b.Fatalf("scan: %d values, %v", n, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*length), "ns/value")
			_ = sum
		})
	}
}
