package runner

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/heapkv/heapkv/bench/engine"
)

// TestSmoke runs every core workload against every engine adapter with a
// tiny data set (the CI smoke test): every operation must succeed and the
// result must round-trip through JSON.
func TestSmoke(t *testing.T) {
	for _, eng := range engine.Names() {
		for _, wl := range []string{"a", "b", "c", "d", "e", "f"} {
			t.Run(eng+"/"+wl, func(t *testing.T) {
				t.Parallel()
				c := SmokeConfig()
				c.Engine, c.Workload, c.Dir = eng, wl, t.TempDir()
				res, err := Execute(context.Background(), c)
				if err != nil {
					t.Fatal(err)
				}
				checkResult(t, res, c)
			})
		}
	}
}

func checkResult(t *testing.T, res *Result, c Config) {
	t.Helper()
	if len(res.Phases) != 2 {
		t.Fatalf("%d phases", len(res.Phases))
	}
	for _, p := range res.Phases {
		if p.Errors != 0 {
			t.Errorf("%s: %d errors, first: %s", p.Name, p.Errors, p.FirstError)
		}
		want := c.Records
		if p.Name == "run" {
			want = c.Ops
		}
		if p.Ops != want {
			t.Errorf("%s: %d ops, want %d", p.Name, p.Ops, want)
		}
		// The no-op engine stores nothing: no disk bytes, no space
		// amplification; every other figure is checked as for the others.
		stores := c.Engine != "noop"
		if p.LogicalBytes <= 0 || (stores && (p.DiskBytes <= 0 || p.SpaceAmp <= 0)) {
			t.Errorf("%s: disk %d logical %d", p.Name, p.DiskBytes, p.LogicalBytes)
		}
		for op, s := range p.ByOp {
			if s.Count > 0 && (s.P50Us <= 0 || s.MaxUs < s.P999Us || s.P999Us < s.P99Us || s.P99Us < s.P95Us || s.P95Us < s.P50Us) {
				t.Errorf("%s %s: percentiles not ordered: %+v", p.Name, op, s)
			}
		}
	}
	if strings.HasPrefix(c.Engine, "heapkv") {
		// heapkv reports its own counters; a load commits one write per
		// record, in at most as many groups.
		load := res.Phases[0].EngineCounters
		if load["commits"] != float64(c.Records) || load["commit_groups"] < 1 || load["commit_groups"] > load["commits"] {
			t.Errorf("load: engine counters %v, want %d commits in 1..%d groups", load, c.Records, c.Records)
		}
	} else if strings.HasPrefix(c.Engine, "pebble") {
		// Pebble's counters come from its metrics: a load writes its
		// values to the WAL, and an unsynced load this small (no
		// memtable switch, whose WAL rotation would sync) never syncs it.
		load := res.Phases[0].EngineCounters
		values := float64(c.Records) * float64(c.FieldCount*c.FieldLength)
		if load["wal_bytes_written"] < values || load["syncs"] != 0 {
			t.Errorf("load: engine counters %v, want at least %.0f WAL bytes and no syncs", load, values)
		}
	} else if res.Phases[0].EngineCounters != nil {
		t.Errorf("%s has no counters, reported %v", c.Engine, res.Phases[0].EngineCounters)
	}
	for op := range res.Proportions {
		if s := res.Phases[1].ByOp[op]; s == nil || s.Count == 0 {
			t.Errorf("run phase has no %s", op)
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("result JSON does not parse: %v", err)
	}
	if back.Engine != res.Engine || len(back.Phases) != 2 || back.Phases[1].Ops != res.Phases[1].Ops {
		t.Fatalf("JSON round trip lost data: %s", b)
	}
}

func TestDurationBound(t *testing.T) {
	c := SmokeConfig()
	c.Engine, c.Workload, c.Dir = "heapkv", "a", t.TempDir()
	c.Ops, c.Duration = 0, 300*time.Millisecond
	res, err := Execute(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Phases[1]
	if r.Ops == 0 || r.Errors != 0 || r.Seconds < 0.25 || r.Seconds > 5 {
		t.Fatalf("duration-bound run: %d ops, %d errors in %.2fs", r.Ops, r.Errors, r.Seconds)
	}
}

func TestCounterDeltas(t *testing.T) {
	before := map[string]float64{"commits": 10, "fsyncs": 3, "gone": 1}
	after := map[string]float64{"commits": 25, "fsyncs": 3, "new": 7}
	d := counterDeltas(before, after)
	if len(d) != 2 || d["commits"] != 15 || d["fsyncs"] != 0 {
		t.Fatalf("deltas %v, want commits 15 and fsyncs 0 only", d)
	}
	if counterDeltas(nil, after) != nil || counterDeltas(before, nil) != nil {
		t.Fatal("deltas without both readings")
	}
	if got, want := countersLine(map[string]float64{"syncs": 1234567, "sync_seconds": 0.123456}), "sync_seconds=0.1235 syncs=1234567"; got != want {
		t.Fatalf("countersLine = %q, want %q", got, want)
	}
}
