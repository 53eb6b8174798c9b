// Package report aggregates YCSB results (medians over runs) into
// markdown tables and PNG charts.
package report

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/heapkv/heapkv/bench/runner"
)

// Key groups results that are repetitions of the same measurement.
type Key struct {
	Engine, Workload string
	ValueSize        int
	FieldCount       int
	ValueDist        string // "fixed" for results written before it was recorded
	Sync             bool
	Phase            string
}

// Cell is the aggregate of a group: medians over its runs.
type Cell struct {
	Runs      int
	OpsPerSec float64
	SpaceAmp  float64
	WriteAmp  float64
	PeakRSS   float64
	// Latency medians per op type: p50, p95, p99, p99.9, max (us).
	Latency map[string][5]float64
}

// Aggregate groups results by Key and takes medians. The load phase of
// every workload's run is a load sample, so it is grouped under workload
// "LOAD".
func Aggregate(results []*runner.Result) map[Key]*Cell {
	type acc struct {
		ops, space, write, rss []float64
		lat                    map[string][5][]float64
	}
	accs := map[Key]*acc{}
	for _, r := range results {
		for _, p := range r.Phases {
			wl := r.Workload
			if p.Name == "load" {
				wl = "LOAD"
			}
			vd := r.ValueDist
			if vd == "" {
				vd = runner.ValueDistFixed
			}
			k := Key{r.Engine, wl, r.ValueSize, r.FieldCount, vd, r.Sync, p.Name}
			a := accs[k]
			if a == nil {
				a = &acc{lat: map[string][5][]float64{}}
				accs[k] = a
			}
			a.ops = append(a.ops, p.OpsPerSec)
			a.space = append(a.space, p.SpaceAmp)
			a.write = append(a.write, p.WriteAmp)
			a.rss = append(a.rss, float64(p.PeakRSSBytes))
			for op, s := range p.ByOp {
				l := a.lat[op]
				for i, v := range []float64{s.P50Us, s.P95Us, s.P99Us, s.P999Us, s.MaxUs} {
					l[i] = append(l[i], v)
				}
				a.lat[op] = l
			}
		}
	}
	out := map[Key]*Cell{}
	for k, a := range accs {
		c := &Cell{Runs: len(a.ops), OpsPerSec: Median(a.ops), SpaceAmp: Median(a.space),
			WriteAmp: Median(a.write), PeakRSS: Median(a.rss), Latency: map[string][5]float64{}}
		for op, l := range a.lat {
			var m [5]float64
			for i := range l {
				m[i] = Median(l[i])
			}
			c.Latency[op] = m
		}
		out[k] = c
	}
	return out
}

// Median of xs (0 for none).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Series identifies one table: a record shape (value-size distribution)
// and durability.
type Series struct {
	ValueSize, FieldCount int
	ValueDist             string
	Sync                  bool
}

// key is the cell of engine e and workload wl in series s.
func (s Series) key(e, wl string) Key {
	return Key{e, wl, s.ValueSize, s.FieldCount, s.ValueDist, s.Sync, phaseOf(wl)}
}

// String describes the series' values and durability, as a chart's title
// says them ("1140 B YCSB records (10 named fields, length-prefixed), sync off").
func (s Series) String() string {
	var shape string
	switch s.ValueDist {
	case runner.ValueDistFixed:
		shape = fmt.Sprintf("%d B single value", s.ValueSize)
		if s.FieldCount > 1 {
			shape = fmt.Sprintf("%d B records (%d fields x %d B)", s.ValueSize, s.FieldCount, s.ValueSize/s.FieldCount)
		}
	case runner.ValueDistYCSB:
		shape = fmt.Sprintf("%d B YCSB records (%d named fields, length-prefixed)", s.ValueSize, s.FieldCount)
	default:
		shape = fmt.Sprintf("%s values (mean %d B)", s.ValueDist, s.ValueSize)
	}
	sync := "sync off"
	if s.Sync {
		sync = "sync on"
	}
	return shape + ", " + sync
}

// SeriesOf lists the series present, sorted.
func SeriesOf(cells map[Key]*Cell) []Series {
	set := map[Series]bool{}
	for k := range cells {
		set[Series{k.ValueSize, k.FieldCount, k.ValueDist, k.Sync}] = true
	}
	var out []Series
	for s := range set {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Sync != out[j].Sync {
			return !out[i].Sync
		}
		if out[i].ValueSize != out[j].ValueSize {
			return out[i].ValueSize < out[j].ValueSize
		}
		if out[i].FieldCount != out[j].FieldCount {
			return out[i].FieldCount < out[j].FieldCount
		}
		return out[i].ValueDist < out[j].ValueDist
	})
	return out
}

func (s Series) has(k Key) bool {
	return k.ValueSize == s.ValueSize && k.FieldCount == s.FieldCount && k.ValueDist == s.ValueDist && k.Sync == s.Sync
}

// Engines and Workloads list the distinct values in cells of series s.
func Engines(cells map[Key]*Cell, s Series) []string {
	return distinct(cells, s, func(k Key) string { return k.Engine })
}

// Workloads lists LOAD first, then the workloads in name order.
func Workloads(cells map[Key]*Cell, s Series) []string {
	w := distinct(cells, s, func(k Key) string { return k.Workload })
	sort.SliceStable(w, func(i, j int) bool { return w[i] == "LOAD" && w[j] != "LOAD" })
	return w
}

func distinct(cells map[Key]*Cell, s Series, f func(Key) string) []string {
	set := map[string]bool{}
	for k := range cells {
		if s.has(k) {
			set[f(k)] = true
		}
	}
	var out []string
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// Markdown writes, per series, a throughput table (median ops/s and the
// number of runs, engines x workloads) and a space/write amplification
// table (after load and after workload A).
func Markdown(w io.Writer, cells map[Key]*Cell) {
	for _, s := range SeriesOf(cells) {
		engines, wls := Engines(cells, s), Workloads(cells, s)
		fmt.Fprintf(w, "### Throughput, %s (median ops/s, runs in parentheses)\n\n", s)
		fmt.Fprintf(w, "| engine | %s |\n|---|%s\n", strings.Join(wls, " | "), strings.Repeat("---:|", len(wls)))
		for _, e := range engines {
			row := []string{e}
			for _, wl := range wls {
				c := cells[s.key(e, wl)]
				if c == nil {
					row = append(row, "-")
					continue
				}
				row = append(row, fmt.Sprintf("%.0f (%d)", c.OpsPerSec, c.Runs))
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		if hasEngine(engines, "heapkv") && len(engines) > 1 {
			row := []string{"heapkv vs best other"}
			for _, wl := range wls {
				h := cells[s.key("heapkv", wl)]
				best, bestName := 0.0, ""
				for _, e := range engines {
					if e == "heapkv" {
						continue
					}
					if c := cells[s.key(e, wl)]; c != nil && c.OpsPerSec > best {
						best, bestName = c.OpsPerSec, e
					}
				}
				if h == nil || best == 0 {
					row = append(row, "-")
					continue
				}
				row = append(row, fmt.Sprintf("%+.0f%% vs %s", (h.OpsPerSec/best-1)*100, bestName))
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		fmt.Fprintf(w, "\n### Space and write amplification, %s (medians)\n\n", s)
		fmt.Fprintf(w, "| engine | space amp after load | write amp of load | space amp after A | write amp of A | peak RSS during A (MiB) |\n|---|---:|---:|---:|---:|---:|\n")
		for _, e := range engines {
			l := cells[s.key(e, "LOAD")]
			a := cells[s.key(e, "A")]
			f := func(c *Cell, v func(*Cell) float64, format string) string {
				if c == nil {
					return "-"
				}
				return fmt.Sprintf(format, v(c))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", e,
				f(l, func(c *Cell) float64 { return c.SpaceAmp }, "%.2f"),
				f(l, func(c *Cell) float64 { return c.WriteAmp }, "%.2f"),
				f(a, func(c *Cell) float64 { return c.SpaceAmp }, "%.2f"),
				f(a, func(c *Cell) float64 { return c.WriteAmp }, "%.2f"),
				f(a, func(c *Cell) float64 { return c.PeakRSS / (1 << 20) }, "%.0f"))
		}
		fmt.Fprintln(w)
	}
}

func hasEngine(engines []string, name string) bool {
	for _, e := range engines {
		if e == name {
			return true
		}
	}
	return false
}

func phaseOf(wl string) string {
	if wl == "LOAD" {
		return "load"
	}
	return "run"
}
