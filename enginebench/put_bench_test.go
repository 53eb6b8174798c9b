package enginebench

import (
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	flagDir     = flag.String("enginebench.dir", "", "parent of the data directories (default $TMPDIR); must be on real disk")
	flagEngines = flag.String("enginebench.engines", "", "regexp: run only the engines whose name matches (default all)")
	flagRotate  = flag.Int("enginebench.rotate", 0, "start the engine order at this index (to vary which engine runs first)")
	flagKeys    = flag.Int("enginebench.keys", 262144, "BenchmarkOverwriteSpace: number of live keys (262144 x 4 KiB = 1 GiB)")
	flagPasses  = flag.Int("enginebench.passes", 5, "BenchmarkOverwriteSpace: overwrite passes over the whole key set")
	flagValue   = flag.Int("enginebench.value", 4096, "BenchmarkOverwriteSpace: value size in bytes")
	flagCarry   = flag.Int("enginebench.carrylimit", 0, "heapkv's Options.CarryLimit (0: the default; -1: carry nothing)")
	flagBlock   = flag.Int("enginebench.blocksize", 0, "heapkv's Options.BlockSize (0: the default)")
	flagSettle  = flag.Duration("enginebench.settle", 60*time.Second, "longest wait for an engine's background work to go idle")
)

func TestMain(m *testing.M) {
	flag.Parse()
	HeapCarryLimit = *flagCarry
	HeapBlockSize = *flagBlock
	os.Exit(m.Run())
}

func wantEngine(name string) bool {
	return *flagEngines == "" || regexp.MustCompile(*flagEngines).MatchString(name)
}

// configs returns Configs rotated by -enginebench.rotate.
func configs() []Config {
	k := *flagRotate % len(Configs)
	return append(append([]Config(nil), Configs[k:]...), Configs[:k]...)
}

// putParams is one cell of the BenchmarkPut sweep.
type putParams struct {
	valueSize int
	writers   int
	sync      bool
}

// runParallel calls fn(i) for every i in [0, n) from writers goroutines and
// returns the first error.
func runParallel(n, writers int, fn func(i uint64, kbuf []byte) error) error {
	var next atomic.Uint64
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kbuf := make([]byte, KeySize)
			for {
				i := next.Add(1) - 1
				if i >= uint64(n) {
					return
				}
				if err := fn(i, kbuf); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func openFresh(b *testing.B, cfg Config, sync bool) (Engine, string) {
	b.Helper()
	dir, err := TempDir(*flagDir, cfg.Name)
	if err != nil {
		b.Fatal(err)
	}
	e, err := cfg.Open(dir, sync)
	if err != nil {
		os.RemoveAll(dir)
		b.Fatal(err)
	}
	return e, dir
}

func reportEngineMetrics(b *testing.B, e Engine, prefix string) {
	for k, v := range e.Metrics() {
		b.ReportMetric(v, prefix+k)
	}
}

// benchPut is the helper every BenchmarkPut cell runs (after etcd's
// wal_bench_test): open a fresh engine, b.N Puts of 16-byte hashed keys
// and random values from p.writers goroutines, then report throughput and
// the space the run left on disk.
func benchPut(b *testing.B, cfg Config, p putParams) {
	e, dir := openFresh(b, cfg, p.sync)
	defer os.RemoveAll(dir)
	Value(0, 0, 1) // generate the value buffer outside the timer
	b.SetBytes(int64(p.valueSize))
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	err := runParallel(b.N, p.writers, func(i uint64, kbuf []byte) error {
		return e.Put(Key(kbuf, i), Value(i, 0, p.valueSize), p.sync)
	})
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	if err != nil {
		e.Close()
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	// CPU of the whole process (getrusage: user + system, background
	// goroutines included) per Put: steadier than ops/s on a shared VM.
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
	logical := float64(b.N) * float64(KeySize+p.valueSize)
	apparent, alloc, err := DiskUsage(dir)
	if err != nil {
		b.Fatal(err)
	}
	// space-amp counts allocated blocks (du), file-amp file sizes: Pebble
	// preallocates WAL files, heapkv's heap file is sparse until filled.
	b.ReportMetric(float64(alloc)/(1<<20), "disk-MiB")
	b.ReportMetric(float64(alloc)/logical, "space-amp")
	b.ReportMetric(float64(apparent)/logical, "file-amp")
	reportEngineMetrics(b, e, "")
	if err := e.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPut sweeps value size x writers x durability x engine. The
// engine is the innermost level so one invocation interleaves engines.
// Op counts come from -benchtime=Nx (see BENCHMARKS.md). The run's length
// matters for the Pebbles: a run of 60,000 synced 4 KiB Puts ends before
// they have compacted what they flushed (the l0-files metric), so
// BENCHMARKS.md also runs 480,000, about what its synced YCSB tables load.
func BenchmarkPut(b *testing.B) {
	for _, size := range []int{100, 1024, 4096, 4100, 16384, 65536} {
		for _, writers := range []int{1, 16, 64} {
			for _, sync := range []bool{true, false} {
				p := putParams{valueSize: size, writers: writers, sync: sync}
				name := fmt.Sprintf("size=%d/writers=%d/sync=%t", size, writers, sync)
				b.Run(name, func(b *testing.B) {
					for _, cfg := range configs() {
						if !wantEngine(cfg.Name) {
							continue
						}
						b.Run("engine="+cfg.Name, func(b *testing.B) { benchPut(b, cfg, p) })
					}
				})
			}
		}
	}
}

// BenchmarkOverwriteSpace loads -enginebench.keys values of
// -enginebench.value bytes, overwrites the whole set -enginebench.passes
// times (each pass a fresh random order, 64 writers, no-sync), syncs, and
// reports on-disk bytes (du: allocated blocks; file-* metrics use file
// sizes) / live logical bytes (keys + values) at three points:
//
//	space-sync    right after the final Sync
//	space-settled after the engine's own background work went idle
//	space-final   after Engine.Compact (a manual full compaction for
//	              Pebble, a Checkpoint for heapkv) and Close
//
// Run it with -benchtime=1x; the timed part is the load plus overwrites.
func BenchmarkOverwriteSpace(b *testing.B) {
	for _, cfg := range configs() {
		if !wantEngine(cfg.Name) {
			continue
		}
		b.Run("engine="+cfg.Name, func(b *testing.B) {
			for n := 0; n < b.N; n++ {
				overwriteSpace(b, cfg)
			}
		})
	}
}

func overwriteSpace(b *testing.B, cfg Config) {
	const writers = 64
	keys, size := *flagKeys, *flagValue
	e, dir := openFresh(b, cfg, false)
	defer os.RemoveAll(dir)
	Value(0, 0, 1)
	live := float64(keys) * float64(KeySize+size)
	b.SetBytes(int64(keys) * int64(size) * int64(1+*flagPasses))
	b.ResetTimer()
	start := time.Now()
	put := func(ver uint64, order []int) error {
		return runParallel(keys, writers, func(i uint64, kbuf []byte) error {
			k := uint64(i)
			if order != nil {
				k = uint64(order[i])
			}
			return e.Put(Key(kbuf, k), Value(k, ver, size), false)
		})
	}
	if err := put(0, nil); err != nil {
		b.Fatal(err)
	}
	loadTime := time.Since(start)
	for pass := 1; pass <= *flagPasses; pass++ {
		r := rand.New(rand.NewPCG(uint64(pass), 42))
		if err := put(uint64(pass), r.Perm(keys)); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.Sync(); err != nil {
		b.Fatal(err)
	}
	total := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(keys)*float64(size)/loadTime.Seconds()/1e6, "load-MB/s")
	b.ReportMetric(float64(keys)*float64(size)*float64(*flagPasses)/(total-loadTime).Seconds()/1e6, "overwrite-MB/s")

	measure := func(name string) {
		apparent, alloc, err := DiskUsage(dir)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(alloc)/live, name)
		b.ReportMetric(float64(apparent)/live, "file-"+name)
		kinds := UsageByKind(dir)
		var msg string
		for _, k := range slices.Sorted(maps.Keys(kinds)) {
			if kinds[k] >= 1<<20 {
				msg += fmt.Sprintf(" %s=%dMiB", k, kinds[k]>>20)
			}
		}
		b.Logf("%s %s: %.3f (du %d MiB):%s", cfg.Name, name, float64(alloc)/live, alloc>>20, msg)
		if name == "space-final" {
			b.ReportMetric(float64(alloc)/(1<<20), "final-disk-MiB")
		}
	}
	measure("space-sync")
	e.Settle(*flagSettle)
	measure("space-settled")
	reportEngineMetrics(b, e, "")
	if err := e.Compact(); err != nil {
		b.Fatal(err)
	}
	// Close waits for Pebble's pending file deletions.
	if err := e.Close(); err != nil {
		b.Fatal(err)
	}
	measure("space-final")
	b.ReportMetric(live/(1<<20), "live-MiB")
}
