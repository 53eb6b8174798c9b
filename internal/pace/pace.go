// Package pace limits background work (resync copies, scrub reads) to a
// rate in bytes per second.
package pace

import (
	"context"
	"time"
)

// Pacer spreads work so that, on average since it was made, no more than
// Rate bytes per second go through. A zero or negative Rate means no limit.
// A Pacer is not safe for concurrent use.
type Pacer struct {
	rate  int64
	start time.Time
	bytes int64
}

// New returns a Pacer for rate bytes per second, starting now.
func New(rate int64) *Pacer { return &Pacer{rate: rate, start: time.Now()} }

// Wait accounts for n more bytes, first sleeping until the bytes before
// them are due at the rate. It returns ctx.Err() if ctx ends first.
func (p *Pacer) Wait(ctx context.Context, n int64) error {
	if p.rate <= 0 {
		return nil
	}
	due := p.start.Add(time.Duration(float64(p.bytes) / float64(p.rate) * float64(time.Second)))
	p.bytes += n
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
