// Command ycsb runs YCSB core workloads against heapkv and the engines it
// is compared with (Pebble, Badger, bbolt). See bench/README.md.
//
//	go run ./cmd/ycsb -engine heapkv,pebble-tuned -workload a -records 1000000 -threads 16 -valuesize 4096
//	go run ./cmd/ycsb -engine heapkv -workload a -records 100000 -valuedist uniform:100-65536
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/heapkv/heapkv/bench/engine"
	"github.com/heapkv/heapkv/bench/runner"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ycsb:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		engines     = flag.String("engine", "heapkv", "engines, comma separated, or 'all' ("+strings.Join(engine.Names(), ", ")+")")
		workloads   = flag.String("workload", "a", "core workloads a-f, comma separated, 'all', or 'custom' (with -mix)")
		mix         = flag.String("mix", "", "custom operation mix, e.g. read=0.8,update=0.1,insert=0.05,scan=0.05 (rmw= for read-modify-write)")
		dist        = flag.String("distribution", "", "request distribution: uniform, zipfian (scrambled, theta 0.99) or latest (default: the workload's)")
		records     = flag.Int64("records", 100000, "records loaded")
		ops         = flag.Int64("ops", 0, "run-phase operations (0: -records, unless -duration is set)")
		duration    = flag.Duration("duration", 0, "run-phase duration (with -ops, whichever ends first)")
		threads     = flag.Int("threads", 16, "client goroutines")
		fieldCount  = flag.Int("fieldcount", 10, "fields per record")
		fieldLength = flag.Int("fieldlength", 100, "bytes per field")
		valueSize   = flag.Int("valuesize", 0, "single value of this many bytes per record (sets -fieldcount 1 -fieldlength N)")
		valueDist   = flag.String("valuedist", "fixed", "value sizes, drawn per insert and update: fixed (-fieldcount x -fieldlength), uniform:MIN-MAX (bytes, inclusive), lognormal:MEDIAN,SIGMA (clamped to [1, 1MiB]) or ycsb (-fieldcount fields \"field<i>\" of -fieldlength bytes, each framed by u32 LE name and value lengths)")
		maxScan     = flag.Int("maxscanlength", 100, "scan lengths are uniform in [1, maxscanlength]")
		sync        = flag.Bool("sync", false, "durable writes (fsync before each write returns)")
		blockCount  = flag.Bool("blockcounters", false, "report what the data directory's block device wrote in each phase, write-back included (Linux; the whole device: sync(2) before each phase starts and after the engine is closed, outside the timed window)")
		dir         = flag.String("dir", filepath.Join(os.TempDir(), "heapkv-ycsb"), "parent of the data directories (one per engine, workload and run)")
		keep        = flag.Bool("keep", false, "keep the data directories")
		phases      = flag.String("phases", "load,run", "phases to run: load, run or load,run (run alone reuses -dir/<engine>-<workload>-r<run>)")
		runs        = flag.Int("runs", 1, "repetitions; runs are interleaved: for each run, for each workload, every engine")
		jsonPath    = flag.String("json", "", "append results to this file (JSON Lines, one run per line)")
		csvPath     = flag.String("csv", "", "append results to this CSV file (one row per run, phase and operation)")
		smoke       = flag.Bool("smoke", false, "tiny CI run: every engine and workload unless -engine/-workload are given, 500 records, 500 ops")
		isolate     = flag.Bool("isolate", true, "run each engine/workload/run in a child process (clean peak RSS and I/O accounting) when there is more than one")
		seed        = flag.Uint64("seed", 1, "random seed")
		pebbleCache = flag.Int64("pebblecache", 1024, "block cache of the pebble-tuned and pebble-vsep engines, MiB")
		runIndex    = flag.Int("run-index", 0, "internal: repetition number of a child process")
		progress    = flag.Bool("progress", true, "show progress on stderr")
		cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of this process to the file (use with one engine, or -isolate=false)")
		traceFile   = flag.String("trace", "", "write an execution trace of this process to the file (go tool trace; use with one engine, or -isolate=false)")
		sequence    = flag.Bool("sequence", false, "load once per engine and run, then run the workloads in the order given on that data (YCSB's procedure, e.g. -workload a,b,c,f,d); each workload is one result, the first carries the load phase")
	)
	flag.Parse()
	if *pebbleCache <= 0 {
		return fmt.Errorf("-pebblecache %d: the block cache needs at least 1 MiB", *pebbleCache)
	}
	engine.SetPebbleCacheSize(*pebbleCache << 20)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })

	base := runner.Config{
		Mix: *mix, Distribution: *dist, MaxScanLength: *maxScan,
		Records: *records, Ops: *ops, Duration: *duration, Threads: *threads,
		FieldCount: *fieldCount, FieldLength: *fieldLength, ValueDist: *valueDist, Sync: *sync, Seed: *seed,
		BlockCounters: *blockCount,
	}
	if *valueSize > 0 {
		base.FieldCount, base.FieldLength = 1, *valueSize
	}
	if *smoke {
		s := runner.SmokeConfig()
		s.Mix, s.Distribution, s.ValueDist, s.Sync, s.Seed = base.Mix, base.Distribution, base.ValueDist, base.Sync, base.Seed
		s.BlockCounters = base.BlockCounters
		base = s
		if !set["engine"] {
			*engines = "all"
		}
		if !set["workload"] {
			*workloads = "all"
		}
		if !set["dir"] {
			d, err := os.MkdirTemp("", "ycsb-smoke-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			*dir = d
		}
		if !set["isolate"] {
			*isolate = false
		}
	}
	// Fail before any run starts (Execute checks again).
	if _, err := runner.ParseValueDist(base.ValueDist, base.FieldCount, base.FieldLength); err != nil {
		return fmt.Errorf("-valuedist: %w", err)
	}
	for _, ph := range strings.Split(*phases, ",") {
		switch strings.TrimSpace(ph) {
		case "load":
			base.Load = true
		case "run":
			base.Run = true
		default:
			return fmt.Errorf("unknown phase %q", ph)
		}
	}
	engList := splitList(*engines, engine.Names())
	for _, e := range engList {
		if _, err := engine.Lookup(e); err != nil {
			return err
		}
	}
	wlList := splitList(*workloads, []string{"a", "b", "c", "d", "e", "f"})
	if *mix != "" && !set["workload"] {
		wlList = []string{"custom"}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	failed := 0
	if *sequence {
		multi := len(engList)**runs > 1
		for r := 1; r <= *runs; r++ {
			for _, eng := range engList {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				idx := r
				if *runIndex > 0 {
					idx = *runIndex
				}
				var err error
				if multi && *isolate {
					err = child(eng, strings.Join(wlList, ","), idx)
				} else {
					err = sequenceRun(ctx, base, eng, wlList, idx, *dir, *keep, *progress, *jsonPath, *csvPath)
				}
				if err != nil {
					fmt.Fprintf(os.Stderr, "ycsb: %s sequence run %d: %v\n", eng, idx, err)
					failed++
				}
			}
		}
		if failed > 0 {
			return fmt.Errorf("%d runs failed", failed)
		}
		return nil
	}
	multi := len(engList)*len(wlList)**runs > 1
	for r := 1; r <= *runs; r++ {
		for _, wl := range wlList {
			for _, eng := range engList {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				idx := r
				if *runIndex > 0 {
					idx = *runIndex
				}
				if multi && *isolate {
					if err := child(eng, wl, idx); err != nil {
						fmt.Fprintf(os.Stderr, "ycsb: %s/%s run %d: %v\n", eng, wl, idx, err)
						failed++
					}
					continue
				}
				c := base
				c.Engine, c.Workload = eng, wl
				c.Dir = filepath.Join(*dir, fmt.Sprintf("%s-%s-r%d", eng, wl, idx))
				if *progress {
					c.Progress = os.Stderr
					c.Terminal = term.IsTerminal(int(os.Stderr.Fd()))
				}
				if _, err := one(ctx, c, idx, *keep, *jsonPath, *csvPath); err != nil {
					fmt.Fprintf(os.Stderr, "ycsb: %s/%s run %d: %v\n", eng, wl, idx, err)
					failed++
				}
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d runs failed", failed)
	}
	return nil
}

// sequenceRun loads engine eng once and runs the workloads in order on
// the same data.
func sequenceRun(ctx context.Context, base runner.Config, eng string, wls []string, idx int, dir string, keep, progress bool, jsonPath, csvPath string) error {
	c := base
	c.Engine = eng
	c.Dir = filepath.Join(dir, fmt.Sprintf("%s-seq-r%d", eng, idx))
	if progress {
		c.Progress = os.Stderr
		c.Terminal = term.IsTerminal(int(os.Stderr.Fd()))
	}
	if !keep {
		defer os.RemoveAll(c.Dir)
	}
	load := base.Load
	for i, wl := range wls {
		c.Workload = wl
		c.Load, c.Run = load && i == 0, true
		res, err := one(ctx, c, idx, true, jsonPath, csvPath)
		if err != nil {
			return fmt.Errorf("workload %s: %w", wl, err)
		}
		// The next workload starts from this one's data: its record count,
		// logical bytes and (uniform, lognormal) record sizes, so that
		// logical bytes stay exact.
		last := res.Phases[len(res.Phases)-1]
		c.Existing, c.ExistingLogicalBytes, c.ExistingSizes = last.Records, last.LogicalBytes, res.Sizes
	}
	return nil
}

func one(ctx context.Context, c runner.Config, idx int, keep bool, jsonPath, csvPath string) (*runner.Result, error) {
	if c.Load {
		if err := os.RemoveAll(c.Dir); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(c.Dir); err != nil {
		return nil, fmt.Errorf("-phases run needs the data of an earlier load: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(c.Dir), 0o755); err != nil {
		return nil, err
	}
	res, err := runner.Execute(ctx, c)
	if !keep {
		os.RemoveAll(c.Dir)
	}
	if res == nil {
		return nil, err
	}
	res.Run = idx
	res.Command = strings.Join(os.Args, " ")
	res.Commit = gitCommit()
	runner.Summary(os.Stdout, res)
	if jsonPath != "" {
		if werr := runner.AppendJSON(jsonPath, res); werr != nil && err == nil {
			err = werr
		}
	}
	if csvPath != "" {
		if werr := runner.AppendCSV(csvPath, res); werr != nil && err == nil {
			err = werr
		}
	}
	for _, p := range res.Phases {
		if p.Errors > 0 && err == nil {
			err = fmt.Errorf("%s phase: %d errors, first: %s", p.Name, p.Errors, p.FirstError)
		}
	}
	if err == nil && len(res.Phases) == 0 {
		err = fmt.Errorf("no phase ran")
	}
	return res, err
}

// child re-runs this command for one engine, workload and repetition in a
// new process, so that peak RSS and /proc/self/io cover that run alone.
func child(eng, wl string, idx int) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := append([]string{}, os.Args[1:]...)
	args = append(args, "-engine="+eng, "-workload="+wl, "-runs=1", fmt.Sprintf("-run-index=%d", idx), "-isolate=false")
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err = cmd.Run()
	if err != nil {
		return fmt.Errorf("child process (%s): %w", time.Since(start).Truncate(time.Second), err)
	}
	return nil
}

func splitList(s string, all []string) []string {
	if s == "all" {
		return all
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, strings.ToLower(p))
		}
	}
	return out
}

// gitCommit returns the commit the binary was built from, with "+dirty"
// when tracked files were modified: from the build's VCS stamp (go build
// inside the repository), else from the git tree holding the working
// directory (go run does not stamp), else "".
func gitCommit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev string
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if dirty {
				rev += "+dirty"
			}
			return rev
		}
	}
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "+dirty"
	}
	return c
}
