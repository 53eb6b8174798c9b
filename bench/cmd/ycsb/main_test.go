package main

import (
	"encoding/csv"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/heapkv/heapkv/bench/engine"
	"github.com/heapkv/heapkv/bench/runner"
)

// runCLI runs the command with os.Args, its output discarded, and returns
// the results it wrote to the JSON Lines file js.
func runCLI(t *testing.T, js string) []*runner.Result {
	t.Helper()
	flag.CommandLine = flag.NewFlagSet("ycsb", flag.ContinueOnError)
	stdout := os.Stdout
	devnull, _ := os.Open(os.DevNull)
	os.Stdout = devnull
	err := run()
	os.Stdout = stdout
	devnull.Close()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(js)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := runner.ReadJSONLines(f)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readCSV returns the rows of the CSV file path.
func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestSmokeCLI runs the command's -smoke mode for every engine and
// workload and checks the JSON and CSV it writes.
func TestSmokeCLI(t *testing.T) {
	tmp := t.TempDir()
	js, cs := filepath.Join(tmp, "r.jsonl"), filepath.Join(tmp, "r.csv")
	os.Args = []string{"ycsb", "-smoke", "-progress=false", "-dir", filepath.Join(tmp, "data"), "-json", js, "-csv", cs}
	res := runCLI(t, js)
	if want := 6 * len(engine.Names()); len(res) != want {
		t.Fatalf("%d results, want %d (6 workloads x every engine)", len(res), want)
	}
	for _, r := range res {
		if len(r.Phases) != 2 || r.Phases[1].Ops != 500 || r.Phases[0].Errors+r.Phases[1].Errors != 0 {
			t.Errorf("%s/%s: bad result %+v", r.Engine, r.Workload, r.Phases)
		}
	}
	rows := readCSV(t, cs)
	if len(rows) < 1+len(res)*3 || len(rows[0]) != len(runner.CSVHeader) {
		t.Fatalf("%d CSV rows, header %v", len(rows), rows[0])
	}
	if entries, _ := os.ReadDir(filepath.Join(tmp, "data")); len(entries) != 0 {
		t.Errorf("data directories left behind: %d", len(entries))
	}
}

// TestSequenceCLI loads once per engine and runs several workloads on the
// same data: only the first result has a load phase, and the record count
// carries over (D's inserts are visible to E).
func TestSequenceCLI(t *testing.T) {
	tmp := t.TempDir()
	js := filepath.Join(tmp, "r.jsonl")
	os.Args = []string{"ycsb", "-sequence", "-smoke", "-engine", "heapkv,bbolt", "-workload", "a,d,e", "-progress=false", "-dir", filepath.Join(tmp, "data"), "-json", js}
	res := runCLI(t, js)
	if len(res) != 6 {
		t.Fatalf("%d results, want 6", len(res))
	}
	for i, r := range res {
		wantPhases := 1
		if i%3 == 0 {
			wantPhases = 2
		}
		if len(r.Phases) != wantPhases {
			t.Errorf("%s/%s: %d phases, want %d", r.Engine, r.Workload, len(r.Phases), wantPhases)
		}
		if r.Workload == "E" && r.Phases[0].Records <= res[i-1].Phases[0].Records {
			t.Errorf("%s: E sees %d records, D ended with %d", r.Engine, r.Phases[0].Records, res[i-1].Phases[0].Records)
		}
	}
}

// TestValueDistCLI runs a -sequence with a lognormal value-size
// distribution and checks that it is recorded in the JSON and CSV
// results, and that a bad -valuedist fails before any run.
func TestValueDistCLI(t *testing.T) {
	tmp := t.TempDir()
	js, cs := filepath.Join(tmp, "r.jsonl"), filepath.Join(tmp, "r.csv")
	os.Args = []string{"ycsb", "-sequence", "-smoke", "-engine", "noop,heapkv", "-workload", "a,d", "-valuedist", "lognormal:300,0.5",
		"-progress=false", "-dir", filepath.Join(tmp, "data"), "-json", js, "-csv", cs}
	res := runCLI(t, js)
	if len(res) != 4 {
		t.Fatalf("%d results, want 4", len(res))
	}
	for _, r := range res {
		if r.ValueDist != "lognormal:300,0.5" || r.ValueSize < 300 || r.ValueSize > 400 {
			t.Errorf("%s/%s: value_dist %q value_size %d", r.Engine, r.Workload, r.ValueDist, r.ValueSize)
		}
	}
	rows := readCSV(t, cs)
	col := slices.Index(rows[0], "value_dist")
	for _, row := range rows[1:] {
		if col < 0 || row[col] != "lognormal:300,0.5" {
			t.Fatalf("CSV header %v, row %v", rows[0], row)
		}
	}

	os.Args = []string{"ycsb", "-engine", "noop", "-valuedist", "uniform:9-1", "-progress=false", "-dir", filepath.Join(tmp, "bad")}
	flag.CommandLine = flag.NewFlagSet("ycsb", flag.ContinueOnError)
	err := run()
	if err == nil || !strings.Contains(err.Error(), "-valuedist") || !strings.Contains(err.Error(), `"uniform:9-1"`) {
		t.Fatalf("bad -valuedist: error %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "bad")); err == nil {
		t.Error("a run started despite the bad -valuedist")
	}
}
