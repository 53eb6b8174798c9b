package heapkv

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkEncodeValue measures the compression step of a Put: text-like
// and random (incompressible) values of 16 KiB and 64 KiB, per codec.
//
//	go test -run '^$' -bench EncodeValue -count 5 .
func BenchmarkEncodeValue(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{16 << 10, 64 << 10} {
		for _, kind := range []string{"text", "random"} {
			v := randomValue(r, size)
			if kind == "text" {
				v = textValue(r, size)
			}
			for _, codec := range []Codec{CodecS2, CodecZstd} {
				b.Run(fmt.Sprintf("size=%d/data=%s/codec=%s", size, kind, codec), func(b *testing.B) {
					enc, err := newEncoder(codec, 0)
					if err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(size))
					stored := 0
					for b.Loop() {
						out, _, done := enc.encode(v, 4096)
						stored = len(out)
						done()
					}
					b.ReportMetric(float64(stored)/float64(size), "stored/raw")
				})
			}
		}
	}
}
