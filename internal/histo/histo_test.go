package histo

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// Quantiles of a known distribution land within a factor of two of the
// exact ones; counts and sums are exact under concurrent recording.
func TestQuantilesAndCounts(t *testing.T) {
	var h Histogram
	var all []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			var mine []time.Duration
			for range 25000 {
				d := time.Duration(r.ExpFloat64() * float64(50*time.Microsecond))
				h.Observe(d)
				mine = append(mine, d)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	s := h.Snapshot()
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	if s.Count != int64(len(all)) || s.Sum != sum {
		t.Fatalf("count %d sum %v, want %d %v", s.Count, s.Sum, len(all), sum)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := all[int(q*float64(len(all)))-1]
		got := s.Quantile(q)
		if got < exact/2 || got > exact*2 {
			t.Errorf("q%.3f: %v, exact %v", q, got, exact)
		}
	}
	if m := s.Mean(); m != sum/time.Duration(len(all)) {
		t.Errorf("mean %v", m)
	}
	var empty Histogram
	if e := empty.Snapshot(); e.Quantile(0.5) != 0 || e.Mean() != 0 {
		t.Error("an empty histogram has a quantile or a mean")
	}
}
