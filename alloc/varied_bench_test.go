package alloc_test

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/heapkv/heapkv/alloc"
)

// BenchmarkReplaceVariedSizes measures one claim, publish and (delayed) free
// of a value replacing another, the allocator's share of a YCSB update, on
// a heap that holds 512 MiB of live values of varied sizes, in the default
// 8 MiB segments. The frees trail the claims by 2,000 replacements, as a
// database's deferred reuse does.
func BenchmarkReplaceVariedSizes(b *testing.B) {
	dists := []struct {
		name  string
		bytes func(r *rand.Rand) int64
	}{
		{"uniform100B-64KiB", func(r *rand.Rand) int64 { return 100 + r.Int64N(64<<10-100+1) }},
		{"lognormal2KiB", func(r *rand.Rand) int64 { return int64(16 + 2048*math.Exp(0.5*r.NormFloat64())) }},
		{"fixed1140B", func(*rand.Rand) int64 { return 1140 }}, // the YCSB 1 KB record, framed
	}
	for _, d := range dists {
		for _, bs := range []int{128, 4096} {
			b.Run(d.name+"/block"+strconv.Itoa(bs), func(b *testing.B) {
				g := alloc.Geometry{BlockSize: bs, SegmentBlocks: (8 << 20) / bs}
				benchReplace(b, g, d.bytes)
			})
		}
	}
}

func benchReplace(b *testing.B, g alloc.Geometry, size func(*rand.Rand) int64) {
	a, err := alloc.New(g, alloc.Config{Cursors: 1})
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var live [][]alloc.Extent
	var liveBlocks int
	for bytes := int64(0); bytes < 512<<20; {
		n := size(r)
		c, err := a.Allocate(g.BlocksFor(n))
		if err != nil {
			b.Fatal(err)
		}
		a.Publish(c)
		live = append(live, c.Extents)
		liveBlocks += c.Blocks()
		bytes += n
	}
	keys := uint64(len(live))
	z := rand.NewZipf(r, 1.01, 1, keys-1)
	const delay = 2000
	var queue [delay][]alloc.Extent
	pieces := 0
	trades := a.Stats().CursorTrades
	b.ResetTimer()
	for i := range b.N {
		k := z.Uint64() * 0x9e3779b97f4a7c15 % keys
		c, err := a.Allocate(g.BlocksFor(size(r)))
		if err != nil {
			b.Fatal(err)
		}
		a.Publish(c)
		pieces += len(c.Extents)
		liveBlocks += c.Blocks() - blocksOf(live[k])
		slot := &queue[i%delay]
		for _, e := range *slot {
			a.Free(e)
		}
		*slot, live[k] = live[k], c.Extents
	}
	b.ReportMetric(float64(pieces)/float64(b.N), "pieces/claim")
	b.ReportMetric(float64(a.Stats().CursorTrades-trades)/float64(b.N), "trades/claim")
	b.ReportMetric(float64(a.Segments()*g.SegmentBlocks)/float64(liveBlocks), "heap/live")
}

func blocksOf(exts []alloc.Extent) int {
	n := 0
	for _, e := range exts {
		n += int(e.Len)
	}
	return n
}
