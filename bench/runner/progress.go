package runner

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progress reports the phase's progress every second until the returned
// function is called: a \r progress bar with live ops/s on a terminal,
// one plain line per interval otherwise.
func (st *state) progress(name string, start time.Time, done *atomic.Int64, total int64, deadline time.Time) func() {
	w := st.c.Progress
	if w == nil {
		return func() {}
	}
	every := st.c.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	label := fmt.Sprintf("%s %s/%s", st.c.Engine, st.w.Name, name)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		last, lastT := int64(0), start
		for {
			select {
			case <-stop:
				if st.c.Terminal {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case now := <-t.C:
				n := done.Load()
				rate := float64(n-last) / now.Sub(lastT).Seconds()
				last, lastT = n, now
				elapsed := now.Sub(start)
				frac := -1.0
				if total > 0 {
					frac = float64(n) / float64(total)
				}
				if !deadline.IsZero() {
					df := float64(elapsed) / float64(deadline.Sub(start))
					if df > frac {
						frac = df
					}
				}
				frac = min(frac, 1)
				if st.c.Terminal {
					const width = 30
					bar := ""
					pct := ""
					if frac >= 0 {
						k := int(frac * width)
						bar = "[" + strings.Repeat("=", k) + strings.Repeat(" ", width-k) + "] "
						pct = fmt.Sprintf("%5.1f%% ", frac*100)
					}
					fmt.Fprintf(w, "\r\033[K%s %s%s%d ops  %.0f ops/s  %s", label, bar, pct, n, rate, elapsed.Truncate(time.Second))
				} else {
					pct := ""
					if frac >= 0 {
						pct = fmt.Sprintf(" %.1f%%", frac*100)
					}
					fmt.Fprintf(w, "%s %s elapsed=%s ops=%d%s ops/s=%.0f\n", time.Now().UTC().Format("15:04:05"), label, elapsed.Truncate(time.Second), n, pct, rate)
				}
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}
