package runner

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heapkv/heapkv/bench/engine"
)

func TestParseValueDist(t *testing.T) {
	good := []struct {
		spec, canon string
		max         int
		mean        float64
	}{
		{"", "fixed", 1000, 1000},
		{"fixed", "fixed", 1000, 1000},
		{" Fixed ", "fixed", 1000, 1000},
		{"ycsb", "ycsb", 1140, 1140},
		{"uniform:100-65536", "uniform:100-65536", 65536, 32818},
		{"uniform: 7 - 7", "uniform:7-7", 7, 7},
		{"lognormal:2048,0.5", "lognormal:2048,0.5", LognormalMaxSize, 2048 * math.Exp(0.125)},
		{"lognormal:4096,0", "lognormal:4096,0", LognormalMaxSize, 4096},
	}
	for _, g := range good {
		d, err := ParseValueDist(g.spec, 10, 100)
		if err != nil {
			t.Errorf("%q: %v", g.spec, err)
			continue
		}
		if d.String() != g.canon || d.Max() != g.max || math.Abs(d.Mean()-g.mean) > 1e-6*g.mean {
			t.Errorf("%q: got %s max %d mean %v, want %s max %d mean %v", g.spec, d, d.Max(), d.Mean(), g.canon, g.max, g.mean)
		}
		if back, err := ParseValueDist(d.String(), 10, 100); err != nil || back.String() != d.String() {
			t.Errorf("%q: canonical form %q does not parse back: %v", g.spec, d, err)
		}
	}
	for _, bad := range []string{
		"zipf", "fixed:10", "ycsb:10x100", "uniform", "uniform:100", "uniform:a-9", "uniform:1-b",
		"uniform:0-10", "uniform:10-5", "uniform:-5-10", fmt.Sprintf("uniform:1-%d", MaxDrawnValueSize+1),
		"lognormal", "lognormal:2048", "lognormal:x,0.5", "lognormal:2048,y", "lognormal:0,0.5",
		"lognormal:2048,-1", "lognormal:2048,NaN", "lognormal:2048,11", "lognormal:2000000,1",
	} {
		_, err := ParseValueDist(bad, 10, 100)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("%q: error %v does not quote the spec", bad, err)
		}
		c := SmokeConfig()
		c.Engine, c.Workload, c.ValueDist = "noop", "a", bad
		if _, err := c.Validate(); err == nil || !strings.Contains(err.Error(), "-valuedist") || !strings.Contains(err.Error(), bad) {
			t.Errorf("Validate %q: error %v does not name the flag and the text", bad, err)
		}
	}
	if _, err := ParseValueDist("ycsb", 0, 100); err == nil {
		t.Error("ycsb with 0 fields accepted")
	}
}

// TestYCSBFraming checks that a 10 x 100 B ycsb record is 1140 bytes that
// decode back to field0..field9 with 100 random bytes each.
func TestYCSBFraming(t *testing.T) {
	d, err := ParseValueDist("ycsb", 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(1, d)
	var prev []byte
	for range 3 {
		v := cl.value()
		if len(v) != 1140 || d.Draw(cl.r) != 1140 {
			t.Fatalf("record of %d bytes, want 1140", len(v))
		}
		var payload []byte
		rest := v
		for i := 0; len(rest) > 0; i++ {
			if len(rest) < 4 {
				t.Fatalf("field %d: truncated name length", i)
			}
			n := int(binary.LittleEndian.Uint32(rest))
			if len(rest) < 4+n+4 {
				t.Fatalf("field %d: truncated", i)
			}
			if name, want := string(rest[4:4+n]), fmt.Sprintf("field%d", i); name != want {
				t.Fatalf("field %d named %q, want %q", i, name, want)
			}
			rest = rest[4+n:]
			l := int(binary.LittleEndian.Uint32(rest))
			if l != 100 || len(rest) < 4+l {
				t.Fatalf("field %d: value length %d of %d left", i, l, len(rest)-4)
			}
			payload = append(payload, rest[4:4+l]...)
			rest = rest[4+l:]
			if i == 9 && len(rest) != 0 {
				t.Fatalf("%d bytes after field9", len(rest))
			}
		}
		if len(payload) != 1000 {
			t.Fatalf("payload %d bytes", len(payload))
		}
		var z bytes.Buffer
		w, _ := flate.NewWriter(&z, flate.BestCompression)
		w.Write(payload)
		w.Close()
		if z.Len() < 990 {
			t.Errorf("field values compress to %d of 1000 bytes: not random", z.Len())
		}
		if prev != nil && bytes.Equal(prev, payload) {
			t.Error("two records have the same field values")
		}
		prev = payload
	}
}

func TestUniformSizes(t *testing.T) {
	for _, b := range [][2]int{{1, 1}, {10, 20}, {100, 164}, {4000, 4100}} {
		spec := fmt.Sprintf("uniform:%d-%d", b[0], b[1])
		d, err := ParseValueDist(spec, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 2))
		counts := map[int]int{}
		lo, hi := math.MaxInt, 0
		for range 100000 {
			n := d.Draw(r)
			lo, hi = min(lo, n), max(hi, n)
			counts[n]++
		}
		if lo != b[0] || hi != b[1] || len(counts) != b[1]-b[0]+1 {
			t.Errorf("%s: sizes in [%d, %d], %d distinct", spec, lo, hi, len(counts))
		}
	}
}

func TestLognormalSizes(t *testing.T) {
	for _, c := range []struct {
		median int
		sigma  float64
	}{{2048, 0.5}, {100, 1}, {65536, 0.25}} {
		d, err := ParseValueDist(fmt.Sprintf("lognormal:%d,%v", c.median, c.sigma), 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(3, 4))
		s := make([]int, 100001)
		sum := 0.0
		for i := range s {
			s[i] = d.Draw(r)
			sum += float64(s[i])
		}
		slices.Sort(s)
		if m := s[len(s)/2]; math.Abs(float64(m)/float64(c.median)-1) > 0.02 {
			t.Errorf("%s: median of draws %d", d, m)
		}
		if m := sum / float64(len(s)); math.Abs(m/d.Mean()-1) > 0.02 {
			t.Errorf("%s: mean of draws %.0f, Mean() %.0f", d, m, d.Mean())
		}
	}
	// Clamping at both ends, and Mean of the clamped distribution.
	for _, spec := range []string{"lognormal:1,2", "lognormal:1048576,2"} {
		d, _ := ParseValueDist(spec, 1, 1)
		r := rand.New(rand.NewPCG(5, 6))
		var atBound int
		sum := 0.0
		for range 100000 {
			n := d.Draw(r)
			if n < 1 || n > LognormalMaxSize {
				t.Fatalf("%s: size %d out of [1, 1 MiB]", spec, n)
			}
			if n == 1 || n == LognormalMaxSize {
				atBound++
			}
			sum += float64(n)
		}
		if atBound < 40000 {
			t.Errorf("%s: only %d draws clamped", spec, atBound)
		}
		if m := sum / 100000; math.Abs(m/d.Mean()-1) > 0.03 {
			t.Errorf("%s: mean of draws %.1f, Mean() %.1f", spec, m, d.Mean())
		}
	}
}

func TestRecordSizes(t *testing.T) {
	var s RecordSizes
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := uint64(g); k < 5*sizeChunkLen; k += 4 * 997 {
				if old := s.swap(k, int32(k%1000+1)); old != 0 {
					t.Errorf("key %d: old size %d", k, old)
				}
			}
		}()
	}
	wg.Wait()
	for k := uint64(0); k < 6*sizeChunkLen; k++ {
		want := int32(0)
		if k < 5*sizeChunkLen && k%(4*997) < 4 { // written by goroutine k%(4*997)
			want = int32(k%1000 + 1)
		}
		if got := s.get(k); got != want {
			t.Fatalf("key %d: size %d, want %d", k, got, want)
		}
	}
}

// recorder wraps the engines opened by Execute and keeps, across opens,
// every record's value size as the engine received it, and per phase
// (engine open to close) the logical bytes at close and the bytes written.
type recorder struct {
	mu     sync.Mutex
	sizes  map[string]int
	logic  []int64 // sum of key + value sizes at each close
	writes []int64 // key + value bytes of successful inserts and updates per open
	cur    int64
}

type recordingDB struct {
	engine.DB
	r *recorder
}

func (d recordingDB) put(k, v []byte, err error) error {
	if err == nil {
		d.r.mu.Lock()
		d.r.sizes[string(k)] = len(v)
		d.r.cur += int64(len(k) + len(v))
		d.r.mu.Unlock()
		runtime.Gosched() // widen the window for racing writes of one record
	}
	return err
}

func (d recordingDB) Insert(k, v []byte) error { return d.put(k, v, d.DB.Insert(k, v)) }
func (d recordingDB) Update(k, v []byte) error { return d.put(k, v, d.DB.Update(k, v)) }
func (d recordingDB) Close() error {
	d.r.mu.Lock()
	var sum int64
	for k, n := range d.r.sizes {
		sum += int64(len(k) + n)
	}
	d.r.logic = append(d.r.logic, sum)
	d.r.writes = append(d.r.writes, d.r.cur)
	d.r.cur = 0
	d.r.mu.Unlock()
	return d.DB.Close()
}

// TestLogicalBytesExact runs a load and then workloads A, D, F and E on
// the same data with variable value sizes (as -sequence does) and checks
// each phase's logical and user-written bytes against what the engine
// received.
func TestLogicalBytesExact(t *testing.T) {
	rec := &recorder{}
	openEngine = func(name, dir string, sync bool) (engine.DB, error) {
		db, err := engine.Open(name, dir, sync)
		return recordingDB{db, rec}, err
	}
	defer func() { openEngine = engine.Open }()
	for _, eng := range []string{"noop", "heapkv"} {
		for _, vd := range []string{"uniform:1-3000", "lognormal:500,1", "ycsb", "fixed"} {
			rec.sizes, rec.logic, rec.writes = map[string]int{}, nil, nil
			c := SmokeConfig()
			c.Engine, c.Dir, c.ValueDist, c.Threads = eng, t.TempDir(), vd, 8
			c.Records, c.Ops = 2000, 3000
			var phases []*Phase
			var last *Result
			for i, wl := range []string{"a", "d", "f", "e"} {
				c.Workload, c.Load = wl, i == 0
				if last != nil {
					p := last.Phases[len(last.Phases)-1]
					c.Existing, c.ExistingLogicalBytes, c.ExistingSizes = p.Records, p.LogicalBytes, last.Sizes
				}
				res, err := Execute(context.Background(), c)
				if err != nil {
					t.Fatalf("%s %s %s: %v", eng, vd, wl, err)
				}
				if res.ValueDist != vd {
					t.Errorf("result value_dist %q, want %q", res.ValueDist, vd)
				}
				phases = append(phases, res.Phases...)
				last = res
			}
			if len(rec.logic) != len(phases) {
				t.Fatalf("%d closes for %d phases", len(rec.logic), len(phases))
			}
			for i, p := range phases {
				if p.Errors != 0 {
					t.Errorf("%s %s phase %d: %d errors: %s", eng, vd, i, p.Errors, p.FirstError)
				}
				if i > 0 && p.LogicalBytes == phases[i-1].LogicalBytes && vd != "fixed" && vd != "ycsb" {
					t.Errorf("%s %s phase %d: logical bytes unchanged by updates", eng, vd, i)
				}
				if p.LogicalBytes != rec.logic[i] || p.UserWriteBytes != rec.writes[i] {
					t.Errorf("%s %s phase %d (%s): logical %d user writes %d, engine received %d and %d",
						eng, vd, i, p.Name, p.LogicalBytes, p.UserWriteBytes, rec.logic[i], rec.writes[i])
				}
				if want := int64(len(rec.sizes)); i == len(phases)-1 && p.Records != want {
					t.Errorf("%s %s: %d records, engine has %d", eng, vd, p.Records, want)
				}
			}
		}
	}
}

// TestValueDistOutput checks the distribution in the summary line and the
// CSV rows.
func TestValueDistOutput(t *testing.T) {
	c := SmokeConfig()
	c.Engine, c.Workload, c.Dir, c.ValueDist = "noop", "a", t.TempDir(), "uniform:100-300"
	res, err := Execute(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, c)
	if res.ValueDist != "uniform:100-300" || res.ValueSize != 200 {
		t.Errorf("value_dist %q value_size %d", res.ValueDist, res.ValueSize)
	}
	var b strings.Builder
	Summary(&b, res)
	if !strings.Contains(b.String(), "value=uniform:100-300(mean 200B)") {
		t.Errorf("summary lacks the distribution:\n%s", b.String())
	}
	col := slices.Index(CSVHeader, "value_dist")
	for _, row := range CSVRows(res) {
		if col < 0 || len(row) != len(CSVHeader) || row[col] != "uniform:100-300" {
			t.Fatalf("CSV row %v", row)
		}
	}
}
