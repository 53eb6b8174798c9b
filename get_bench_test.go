package heapkv_test

import (
	"fmt"
	"testing"

	"github.com/heapkv/heapkv"
)

// BenchmarkGetSizes reads heap values of one size over and over (Get's
// own cost: the pages are cached), in one extent each and, with 16 KiB
// segments, in several. Run:
//
//	go test -run '^$' -bench GetSizes -count 6 .
func BenchmarkGetSizes(b *testing.B) {
	cases := []struct {
		size    int
		segment int64 // SegmentSize; 0: the default
	}{
		{1140, 0}, {4100, 0}, {16384, 0}, {32768, 0}, {32832, 0}, {40000, 0}, {60000, 0}, {40000, 16 << 10},
	}
	for _, c := range cases {
		name := fmt.Sprintf("%dB", c.size)
		if c.segment != 0 {
			name += fmt.Sprintf("/segment%dKiB", c.segment>>10)
		}
		b.Run(name, func(b *testing.B) {
			db := heapkv.OpenTestDB(b, b.TempDir(), &heapkv.Options{NoSync: true, SegmentSize: c.segment})
			const keys = 256
			val := make([]byte, c.size)
			for i := range val {
				val[i] = byte(i)
			}
			for k := range keys {
				if err := db.Put(fmt.Appendf(nil, "k%03d", k), val); err != nil {
					b.Fatal(err)
				}
			}
			exts, err := heapkv.HeapExtents(db, []byte("k000"))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(c.size))
			b.ResetTimer()
			for i := range b.N {
				v, err := db.Get(fmt.Appendf(nil, "k%03d", i%keys))
				if err != nil || len(v) != c.size {
					b.Fatalf("get: %d bytes, %v", len(v), err)
				}
			}
			b.ReportMetric(float64(len(exts)), "extents")
		})
	}
}
