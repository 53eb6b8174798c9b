package runner

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// AppendJSON appends res as one line (JSON Lines) to path.
func AppendJSON(path string, res *Result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// CSVHeader is the header of the CSV results: one row per run, phase and
// operation type, plus an "ALL" row per phase.
var CSVHeader = []string{
	"start", "engine", "workload", "distribution", "records", "threads", "field_count", "field_length",
	"value_size", "value_dist", "sync", "run", "phase", "op", "count", "errors", "phase_seconds", "phase_ops_per_sec",
	"mean_us", "p50_us", "p95_us", "p99_us", "p999_us", "max_us",
	"logical_bytes", "disk_bytes", "space_amp", "user_write_bytes", "dirtied_bytes", "write_amp", "peak_rss_bytes",
	"cpu_user_seconds", "cpu_sys_seconds", "cpu_us_per_op",
	"block_write_bytes", "block_flushes", "block_write_amp", "block_busy",
}

// CSVRows returns res's CSV rows.
func CSVRows(res *Result) [][]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	var rows [][]string
	for _, p := range res.Phases {
		ops := make([]string, 0, len(p.ByOp))
		for op := range p.ByOp {
			ops = append(ops, op)
		}
		sort.Strings(ops)
		ops = append(ops, "ALL")
		for _, op := range ops {
			s := p.ByOp[op]
			if op == "ALL" {
				s = &OpStats{Count: p.Ops, Errors: p.Errors}
			}
			rows = append(rows, []string{
				res.Start.Format("2006-01-02T15:04:05Z"), res.Engine, res.Workload, res.Distribution,
				i(res.Records), strconv.Itoa(res.Threads), strconv.Itoa(res.FieldCount), strconv.Itoa(res.FieldLength),
				strconv.Itoa(res.ValueSize), valueDistOf(res), strconv.FormatBool(res.Sync), strconv.Itoa(res.Run), p.Name, op,
				i(s.Count), i(s.Errors), f(p.Seconds), f(p.OpsPerSec),
				f(s.MeanUs), f(s.P50Us), f(s.P95Us), f(s.P99Us), f(s.P999Us), f(s.MaxUs),
				i(p.LogicalBytes), i(p.DiskBytes), f(p.SpaceAmp), i(p.UserWriteBytes), i(p.Dirtied), f(p.WriteAmp),
				i(p.PeakRSSBytes), f(p.CPUUserSeconds), f(p.CPUSysSeconds), f(p.CPUUsPerOp),
				i(p.BlockWriteBytes), i(p.BlockFlushes), f(p.BlockWriteAmp), f(p.BlockBusy),
			})
		}
	}
	return rows
}

// AppendCSV appends res's rows to path, writing the header if the file is
// new or empty.
func AppendCSV(path string, res *Result) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w := csv.NewWriter(f)
	if st.Size() == 0 {
		w.Write(CSVHeader)
	}
	w.WriteAll(CSVRows(res)) // flushes
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadJSONLines reads results written by AppendJSON.
func ReadJSONLines(r io.Reader) ([]*Result, error) {
	var out []*Result
	d := json.NewDecoder(r)
	for d.More() {
		var res Result
		if err := d.Decode(&res); err != nil {
			return out, err
		}
		out = append(out, &res)
	}
	return out, nil
}

// Summary writes a human-readable summary of res.
func Summary(w io.Writer, res *Result) {
	fmt.Fprintf(w, "== %s  workload %s (%s)  records=%d threads=%d value=%s sync=%v",
		res.Engine, res.Workload, res.Distribution, res.Records, res.Threads, valueDesc(res), res.Sync)
	if res.Run > 0 {
		fmt.Fprintf(w, " run=%d", res.Run)
	}
	fmt.Fprintln(w)
	for _, p := range res.Phases {
		fmt.Fprintf(w, "  %-4s %10.0f ops/s  %d ops in %.2fs (+%.2fs close)  errors=%d\n", p.Name, p.OpsPerSec, p.Ops, p.Seconds, p.CloseSeconds, p.Errors)
		if p.FirstError != "" {
			fmt.Fprintf(w, "       first error: %s\n", p.FirstError)
		}
		ops := make([]string, 0, len(p.ByOp))
		for op := range p.ByOp {
			ops = append(ops, op)
		}
		sort.Strings(ops)
		for _, op := range ops {
			s := p.ByOp[op]
			fmt.Fprintf(w, "       %-18s n=%-9d p50=%.1fus p95=%.1fus p99=%.1fus p99.9=%.1fus max=%.1fus\n",
				op, s.Count, s.P50Us, s.P95Us, s.P99Us, s.P999Us, s.MaxUs)
		}
		fmt.Fprintf(w, "       disk=%s logical=%s space-amp=%.2f  dirtied=%s user-writes=%s write-amp=%.2f  peak-rss=%s\n",
			mib(p.DiskBytes), mib(p.LogicalBytes), p.SpaceAmp, mib(p.Dirtied), mib(p.UserWriteBytes), p.WriteAmp, mib(p.PeakRSSBytes))
		if p.BlockDevice != "" {
			fmt.Fprintf(w, "       block device %s: wrote %s in %d requests, %d flushes; write-amp=%.2f; busy %.0f%% of the phase\n",
				p.BlockDevice, mib(p.BlockWriteBytes), p.BlockWriteIOs, p.BlockFlushes, p.BlockWriteAmp, 100*p.BlockBusy)
		}
		if len(p.EngineCounters) > 0 {
			fmt.Fprintf(w, "       engine: %s\n", countersLine(p.EngineCounters))
		}
		fmt.Fprintf(w, "       cpu user=%.2fs sys=%.2fs  %.2fus/op\n", p.CPUUserSeconds, p.CPUSysSeconds, p.CPUUsPerOp)
	}
}

// countersLine renders an engine's counters as name=value in name order.
func countersLine(c map[string]float64) string {
	names := make([]string, 0, len(c))
	for k := range c {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		if v := c[k]; v == math.Trunc(v) && math.Abs(v) < 1e15 {
			fmt.Fprintf(&b, "%s=%d", k, int64(v)) // a count
		} else {
			fmt.Fprintf(&b, "%s=%.4g", k, v)
		}
	}
	return b.String()
}

// valueDistOf is res's value-size distribution; results written before
// it was recorded used fixed sizes.
func valueDistOf(res *Result) string {
	if res.ValueDist == "" {
		return ValueDistFixed
	}
	return res.ValueDist
}

// valueDesc describes res's values for the summary line: FxL=SB for
// fixed (as before distributions existed), the distribution otherwise.
func valueDesc(res *Result) string {
	switch d := valueDistOf(res); d {
	case ValueDistFixed:
		return fmt.Sprintf("%dx%d=%dB", res.FieldCount, res.FieldLength, res.ValueSize)
	case ValueDistYCSB:
		return fmt.Sprintf("ycsb:%dx%d=%dB(framed)", res.FieldCount, res.FieldLength, res.ValueSize)
	default:
		return fmt.Sprintf("%s(mean %dB)", d, res.ValueSize)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
