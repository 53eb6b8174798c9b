package report

import (
	"bytes"
	"image/png"
	"os"
	"strings"
	"testing"

	"github.com/heapkv/heapkv/bench/runner"
)

func fake(engine, wl string, ops float64) *runner.Result {
	return &runner.Result{
		Engine: engine, Workload: wl, ValueSize: 4096, FieldCount: 1,
		Phases: []*runner.Phase{
			{Name: "load", OpsPerSec: ops * 2, SpaceAmp: 1.1, WriteAmp: 2, ByOp: map[string]*runner.OpStats{"INSERT": {Count: 1, P50Us: 5, P95Us: 9, P99Us: 20, P999Us: 50, MaxUs: 90}}},
			{Name: "run", OpsPerSec: ops, SpaceAmp: 1.2, WriteAmp: 3, ByOp: map[string]*runner.OpStats{"READ": {Count: 1, P50Us: 3, P95Us: 8, P99Us: 10, P999Us: 40, MaxUs: 80}}},
		},
	}
}

func TestAggregateMarkdownCharts(t *testing.T) {
	var rs []*runner.Result
	for _, ops := range []float64{100, 300, 200} {
		rs = append(rs, fake("heapkv", "A", ops), fake("pebble", "A", ops/2))
	}
	rs = append(rs, fake("heapkv", "C", 1000))
	cells := Aggregate(rs)
	c := cells[Key{"heapkv", "A", 4096, 1, "fixed", false, "run"}]
	if c == nil || c.Runs != 3 || c.OpsPerSec != 200 {
		t.Fatalf("heapkv A: %+v", c)
	}
	if l := cells[Key{"heapkv", "LOAD", 4096, 1, "fixed", false, "load"}]; l == nil || l.Runs != 4 {
		t.Fatalf("heapkv load: %+v", l)
	}
	var b bytes.Buffer
	Markdown(&b, cells)
	md := b.String()
	for _, want := range []string{"| engine | LOAD | A | C |", "| heapkv | 500 (4) | 200 (3) | 1000 (1) |", "| pebble | 200 (3) | 100 (3) | - |", "| heapkv | 1.10 | 2.00 | 1.20 | 3.00 |", "| heapkv vs best other | +150% vs pebble | +100% vs pebble | - |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	files, err := Charts(t.TempDir(), cells)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1+3 { // throughput + LOAD/INSERT, A/READ, C/READ
		t.Fatalf("charts: %v", files)
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(fh); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		fh.Close()
	}
}

func TestMedian(t *testing.T) {
	if Median(nil) != 0 || Median([]float64{3, 1, 2}) != 2 || Median([]float64{4, 1, 2, 3}) != 2.5 {
		t.Fatal("Median")
	}
}

// TestValueDistSeries checks that results of another value-size
// distribution with the same mean size form their own table, titled with
// the distribution, and that results without one count as fixed.
func TestValueDistSeries(t *testing.T) {
	fixed := fake("heapkv", "A", 100)
	uni := fake("heapkv", "A", 50)
	uni.ValueDist = "uniform:1024-7168"
	ycsbRec := fake("heapkv", "A", 70)
	ycsbRec.ValueDist, ycsbRec.ValueSize, ycsbRec.FieldCount = "ycsb", 1140, 10
	cells := Aggregate([]*runner.Result{fixed, uni, ycsbRec})
	series := SeriesOf(cells)
	if len(series) != 3 {
		t.Fatalf("series %v", series)
	}
	var b bytes.Buffer
	Markdown(&b, cells)
	for _, want := range []string{
		"Throughput, 4096 B single value, sync off", "| heapkv | 200 (1) | 100 (1) |",
		"Throughput, uniform:1024-7168 values (mean 4096 B), sync off", "| heapkv | 100 (1) | 50 (1) |",
		"Throughput, 1140 B YCSB records (10 named fields, length-prefixed), sync off",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
	tags := map[string]bool{}
	for _, s := range series {
		tags[seriesTag(s)] = true
	}
	if !tags["4096B"] || !tags["uniform-1024-7168"] || !tags["ycsb1140B"] {
		t.Errorf("chart tags %v", tags)
	}
}
