package report

import (
	"fmt"
	"image/color"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/heapkv/heapkv/bench/runner"
)

// Charts writes PNG charts into dir and returns their paths: per series,
// throughput per workload per engine (grouped bars), and per series,
// workload and op type, the latency percentiles of every engine.
func Charts(dir string, cells map[Key]*Cell) ([]string, error) {
	var files []string
	for _, s := range SeriesOf(cells) {
		engines, wls := Engines(cells, s), Workloads(cells, s)
		tag := seriesTag(s)

		p := plot.New()
		p.Title.Text = "YCSB throughput, " + s.String()
		p.Y.Label.Text = "ops/s (median)"
		p.Legend.Top = true
		w := 7 * vg.Millimeter
		for i, e := range engines {
			vals := make(plotter.Values, len(wls))
			for j, wl := range wls {
				if c := cells[s.key(e, wl)]; c != nil {
					vals[j] = c.OpsPerSec
				}
			}
			b, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return files, err
			}
			b.Color = plotutil.Color(i)
			b.LineStyle.Width = 0
			b.Offset = w * vg.Length(float64(i)-float64(len(engines)-1)/2)
			p.Add(b)
			p.Legend.Add(e, b)
		}
		p.NominalX(wls...)
		p.Y.Min, p.Y.Max = 0, p.Y.Max*1.3 // headroom for the legend
		f := filepath.Join(dir, "throughput_"+tag+".png")
		width := vg.Length(40+len(wls)*(7*len(engines)+10)) * vg.Millimeter
		if err := p.Save(width, 120*vg.Millimeter, f); err != nil {
			return files, err
		}
		files = append(files, f)

		for _, wl := range wls {
			ops := map[string]bool{}
			for _, e := range engines {
				if c := cells[s.key(e, wl)]; c != nil {
					for op := range c.Latency {
						ops[op] = true
					}
				}
			}
			var opList []string
			for op := range ops {
				opList = append(opList, op)
			}
			sort.Strings(opList)
			for _, op := range opList {
				f, err := latencyChart(dir, tag, s, wl, op, engines, cells)
				if err != nil {
					return files, err
				}
				files = append(files, f)
			}
		}
	}
	return files, nil
}

var pctNames = []string{"p50", "p95", "p99", "p99.9"}

func latencyChart(dir, tag string, s Series, wl, op string, engines []string, cells map[Key]*Cell) (string, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s latency, workload %s, %s", op, wl, s)
	p.Y.Label.Text = "microseconds (median of runs)"
	p.Legend.Top = true
	w := 6 * vg.Millimeter
	for i := range pctNames {
		vals := make(plotter.Values, len(engines))
		for j, e := range engines {
			if c := cells[s.key(e, wl)]; c != nil {
				vals[j] = c.Latency[op][i]
			}
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return "", err
		}
		b.Color = shade(i)
		b.LineStyle.Width = 0
		b.Offset = w * vg.Length(float64(i)-1.5)
		p.Add(b)
		p.Legend.Add(pctNames[i], b)
	}
	p.NominalX(engines...)
	p.Y.Min, p.Y.Max = 0, p.Y.Max*1.3
	name := fmt.Sprintf("latency_%s_%s_%s.png", tag, strings.ToLower(wl), strings.ToLower(strings.ReplaceAll(op, "-", "")))
	f := filepath.Join(dir, name)
	return f, p.Save(vg.Length(40+30*len(engines))*vg.Millimeter, 100*vg.Millimeter, f)
}

func shade(i int) color.Color {
	c := []color.RGBA{{0x9e, 0xca, 0xe1, 255}, {0x42, 0x92, 0xc6, 255}, {0x08, 0x51, 0x9c, 255}, {0x08, 0x30, 0x6b, 255}}
	return c[i%len(c)]
}

func seriesTag(s Series) string {
	var t string
	switch s.ValueDist {
	case runner.ValueDistFixed:
		t = fmt.Sprintf("%dB", s.ValueSize)
		if s.FieldCount > 1 {
			t = fmt.Sprintf("%dx%dB", s.FieldCount, s.ValueSize/s.FieldCount)
		}
	case runner.ValueDistYCSB:
		t = fmt.Sprintf("ycsb%dB", s.ValueSize)
	default: // uniform:100-8000 -> uniform-100-8000
		t = strings.NewReplacer(":", "-", ",", "-").Replace(s.ValueDist)
	}
	if s.Sync {
		t += "_sync"
	}
	return t
}
