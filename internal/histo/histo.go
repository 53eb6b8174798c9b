// Package histo is a latency histogram that many goroutines record into
// without a lock: one atomic counter per power-of-two bucket of
// nanoseconds. Quantiles are estimated within a factor of two, by linear
// interpolation inside the bucket that holds them: what dashboards need
// for p50/p99/p999 of operations that range from microseconds to seconds.
package histo

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Buckets is the number of buckets: bucket i counts durations d with
// bits.Len64(d in ns) == i, that is [2^(i-1), 2^i) ns; bucket 0 counts 0.
const Buckets = 64

// Histogram records durations. The zero value is ready to use.
type Histogram struct {
	buckets [Buckets]atomic.Int64
	count   atomic.Int64
	sum     atomic.Int64 // ns
}

// Observe records d (a negative d counts as 0).
func (h *Histogram) Observe(d time.Duration) {
	ns := uint64(max(d, 0))
	h.buckets[bits.Len64(ns)].Add(1)
	h.count.Add(1)
	h.sum.Add(int64(ns))
}

// Since records the time since start.
func (h *Histogram) Since(start time.Time) { h.Observe(time.Since(start)) }

// Snapshot is a histogram's counts at one moment (each counter read once;
// counts recorded meanwhile may be in some and not others).
type Snapshot struct {
	Count   int64
	Sum     time.Duration
	Buckets [Buckets]int64
}

// Snapshot returns the current counts.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.buckets {
		s.Buckets[i] = h.buckets[i].Load()
	}
	s.Count, s.Sum = h.count.Load(), time.Duration(h.sum.Load())
	return s
}

// UpperBound is the exclusive upper bound of bucket i.
func UpperBound(i int) time.Duration {
	if i >= 63 {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(uint64(1) << i)
}

// Quantile estimates the q-quantile (0 <= q <= 1): the bucket holding it,
// interpolated linearly by rank inside the bucket. 0 if nothing was
// recorded.
func (s Snapshot) Quantile(q float64) time.Duration {
	var total int64
	for _, c := range s.Buckets {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen int64
	for i, c := range s.Buckets {
		if c == 0 {
			continue
		}
		if float64(seen+c) >= rank {
			lo := time.Duration(0)
			if i > 0 {
				lo = UpperBound(i - 1)
			}
			frac := (rank - float64(seen)) / float64(c)
			return lo + time.Duration(frac*float64(UpperBound(i)-lo))
		}
		seen += c
	}
	return UpperBound(Buckets - 1)
}

// Mean is the mean of what was recorded, 0 if nothing was.
func (s Snapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Count)
}
