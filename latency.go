package heapkv

import (
	"fmt"
	"time"

	"github.com/heapkv/heapkv/internal/histo"
)

// Latency summarises the durations of one kind of operation since Open.
// Quantiles are estimated from power-of-two buckets: within a factor of
// two, interpolated inside the bucket.
type Latency struct {
	Count int64         `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	// Buckets[i] counts the durations d with 2^(i-1) <= d < 2^i
	// nanoseconds (Buckets[0] those of 0): for exporters that want the
	// whole distribution (package promstats).
	Buckets [histo.Buckets]int64 `json:"buckets"`
}

// String renders l for a person.
func (l Latency) String() string {
	if l.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("%d, mean %v, p50 %v, p99 %v, p99.9 %v", l.Count, round(l.Mean), round(l.P50), round(l.P99), round(l.P999))
}

// BucketUpperBound is the exclusive upper bound of Latency.Buckets[i].
func BucketUpperBound(i int) time.Duration { return histo.UpperBound(i) }

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}

func latencyOf(h *histo.Histogram) Latency {
	s := h.Snapshot()
	return Latency{
		Count: s.Count, Sum: s.Sum, Mean: s.Mean(),
		P50: s.Quantile(0.5), P99: s.Quantile(0.99), P999: s.Quantile(0.999),
		Buckets: s.Buckets,
	}
}
