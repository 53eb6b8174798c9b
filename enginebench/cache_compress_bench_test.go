package enginebench

// Value cache and compression benchmarks (issue 7). They use only heapkv's
// public API. Data goes to -cc.dir (default $TMPDIR), which must be on a
// real disk; the heap file then sits in the OS page cache during the read
// benchmarks, so "cache off" means reads served by the kernel's page cache:
// the value cache's gain shown is CPU (syscall, CRC, decompression), not
// disk I/O.
//
//	go test -run '^$' -bench 'YCSBC' -benchtime 300000x -timeout 2h ./enginebench
//	go test -run '^$' -bench 'CompressLoadA' -benchtime 1x -timeout 2h ./enginebench

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

var (
	ccDir      = flag.String("cc.dir", "", "parent of the cache/compression benchmark directories (default $TMPDIR)")
	ccKeys     = flag.Int("cc.keys", 200000, "YCSBC: keys loaded")
	ccValue    = flag.Int("cc.value", 4096, "YCSBC: value size in bytes")
	ccReaders  = flag.Int("cc.readers", 4, "YCSBC and CompressLoadA: concurrent clients")
	ccTheta    = flag.Float64("cc.theta", 0.99, "zipfian constant (YCSB's default 0.99)")
	ccSizes    = flag.String("cc.sizes", "off,8,32,64,128,256,1024", "YCSBC: value cache sizes in MiB ('off' disables)")
	ccYKind    = flag.String("cc.ykind", "random", "YCSBC: kind of values loaded (random or text)")
	ccYCodec   = flag.String("cc.ycodec", "none", "YCSBC: codec the values are loaded with (none, s2, zstd)")
	ccCKeys    = flag.Int("cc.ckeys", 40000, "CompressLoadA: keys loaded")
	ccCValue   = flag.Int("cc.cvalue", 16384, "CompressLoadA: value size in bytes")
	ccCOps     = flag.Int("cc.cops", 200000, "CompressLoadA: operations of the 50/50 read/update phase")
	ccCodecs   = flag.String("cc.codecs", "none,s2,zstd", "CompressLoadA: codecs")
	ccKeepData = flag.Bool("cc.keep", false, "keep the data directories")
)

// ccLogger keeps benchmark output parseable (warnings go to stderr).
var ccLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// ---- workload pieces ----

// zipfian draws integers in [0, n) with YCSB's ZipfianGenerator (Gray et
// al., "Quickly generating billion-record synthetic databases"); item 0 is
// the most popular. scrambled spreads the popular items over the key space
// as YCSB's ScrambledZipfianGenerator does.
type zipfian struct {
	n                        uint64
	theta, alpha, zetan, eta float64
	half                     float64 // 1 + 0.5^theta
}

func newZipfian(n uint64, theta float64) *zipfian {
	zeta := func(n uint64) float64 {
		s := 0.0
		for i := uint64(1); i <= n; i++ {
			s += 1 / math.Pow(float64(i), theta)
		}
		return s
	}
	z := &zipfian{n: n, theta: theta, alpha: 1 / (1 - theta), zetan: zeta(n)}
	zeta2 := zeta(2)
	z.eta = (1 - math.Pow(2/float64(n), 1-theta)) / (1 - zeta2/z.zetan)
	z.half = 1 + math.Pow(0.5, theta)
	return z
}

func (z *zipfian) next(r *rand.Rand) uint64 {
	u := r.Float64()
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < z.half {
		return 1
	}
	return min(uint64(float64(z.n)*math.Pow(z.eta*u-z.eta+1, z.alpha)), z.n-1)
}

func (z *zipfian) scrambled(r *rand.Rand) uint64 { return ccMix(z.next(r)) % z.n }

func ccMix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func ccKey(i uint64) []byte { return []byte(fmt.Sprintf("user%012d", i)) }

// ccRandomValue is incompressible.
func ccRandomValue(r *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b[:n]
}

var ccWords = strings.Fields(`request served user session account order item price total status
	ok error timeout retry cache miss hit disk block segment replica checkpoint recovery
	the a of to and in for on with from by at as is was be this that which value key`)

// ccTextValue is text-like: JSON log lines with varying numbers, ids and
// short messages. s2 stores it in about 40% of its size, zstd in about 25%.
func ccTextValue(r *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+256)
	levels := []string{"info", "warn", "debug", "error"}
	for len(b) < n {
		b = append(b, `{"ts":"2026-11-25T04:`...)
		b = strconv.AppendInt(b, int64(r.IntN(60)), 10)
		b = append(b, ':')
		b = strconv.AppendFloat(b, r.Float64()*60, 'f', 6, 64)
		b = append(b, `Z","level":"`...)
		b = append(b, levels[r.IntN(len(levels))]...)
		b = append(b, `","user":"u`...)
		b = strconv.AppendInt(b, int64(r.IntN(100000)), 10)
		b = append(b, `","latency_us":`...)
		b = strconv.AppendInt(b, int64(r.ExpFloat64()*800), 10)
		b = append(b, `,"msg":"`...)
		for w := 3 + r.IntN(8); w > 0; w-- {
			b = append(b, ccWords[r.IntN(len(ccWords))]...)
			b = append(b, ' ')
		}
		b = append(b, "\"}\n"...)
	}
	return b[:n]
}

// ccPoolSize is how many distinct values of each kind and size the
// benchmarks draw from: generating values (text especially) costs more CPU
// than compressing them, and each value is compressed on its own, so a pool
// keeps the generator out of the CPU figures without changing what the
// codecs see.
const ccPoolSize = 1024

var ccPools sync.Map // "kind/size" -> [][]byte

// ccValueFor returns the value of key i at version v, of kind "text" or
// "random". The slice is shared: callers must not modify it.
func ccValueFor(kind string, i, v uint64, n int) []byte {
	name := fmt.Sprintf("%s/%d", kind, n)
	pool, ok := ccPools.Load(name)
	if !ok {
		r := rand.New(rand.NewPCG(uint64(n), uint64(len(kind))))
		vals := make([][]byte, ccPoolSize)
		for j := range vals {
			if kind == "text" {
				vals[j] = ccTextValue(r, n)
			} else {
				vals[j] = ccRandomValue(r, n)
			}
		}
		pool, _ = ccPools.LoadOrStore(name, vals)
	}
	return pool.([][]byte)[ccMix(i^v<<32)%ccPoolSize]
}

func ccTempDir(b *testing.B, name string) string {
	base := *ccDir
	if base == "" {
		base = os.TempDir()
	}
	d, err := os.MkdirTemp(base, "heapkv-cc-"+name+"-")
	if err != nil {
		b.Fatal(err)
	}
	return filepath.Join(d, "db")
}

func ccRemove(dir string) {
	if !*ccKeepData {
		os.RemoveAll(filepath.Dir(dir))
	}
}

// ccParallel runs fn(i) for i in [0, n) on clients goroutines.
func ccParallel(n, clients int, fn func(r *rand.Rand, i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var first atomic.Value
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(r, i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}

func ccOpen(b *testing.B, dir string, o heapkv.Options) *heapkv.DB {
	o.Logger = ccLogger
	db, err := heapkv.Open(dir, &o)
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// ---- YCSB C ----

var (
	ycsbOnce sync.Once
	ycsbDir  string
)

// loadYCSB loads -cc.keys values of -cc.value bytes (-cc.ykind, stored
// with -cc.ycodec) once per process; every cache size then reopens the same
// database.
func loadYCSB(b *testing.B) string {
	ycsbOnce.Do(func() {
		codec, err := heapkv.ParseCodec(*ccYCodec)
		if err != nil {
			b.Fatal(err)
		}
		ycsbDir = ccTempDir(b, "ycsbc")
		db := ccOpen(b, ycsbDir, heapkv.Options{NoSync: true, ValueCacheSize: -1, Compression: codec})
		start := time.Now()
		err = ccParallel(*ccKeys, *ccReaders, func(r *rand.Rand, i int) error {
			return db.Put(ccKey(uint64(i)), ccValueFor(*ccYKind, uint64(i), 0, *ccValue))
		})
		if err == nil {
			err = db.Close()
		}
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stderr, "ycsbc: loaded %d x %d B in %v into %s\n", *ccKeys, *ccValue, time.Since(start).Round(time.Millisecond), ycsbDir)
	})
	return ycsbDir
}

// BenchmarkYCSBC is YCSB workload C (100% reads, scrambled zipfian) over
// -cc.keys keys of -cc.value bytes, once per value cache size in -cc.sizes.
// Each size reopens the database (an empty cache), warms it with one read
// per key, then times b.N reads by -cc.readers clients. Reported: reads/s,
// the cache hit ratio of the timed reads, CPU µs per read.
func BenchmarkYCSBC(b *testing.B) {
	dir := loadYCSB(b)
	b.Cleanup(func() { ccRemove(dir) })
	z := newZipfian(uint64(*ccKeys), *ccTheta)
	for _, size := range strings.Split(*ccSizes, ",") {
		cacheBytes := int64(-1)
		if size != "off" {
			mib, err := strconv.Atoi(size)
			if err != nil {
				b.Fatalf("-cc.sizes: %v", err)
			}
			cacheBytes = int64(mib) << 20
		}
		b.Run("cache="+size, func(b *testing.B) {
			db := ccOpen(b, dir, heapkv.Options{ValueCacheSize: cacheBytes})
			defer db.Close()
			read := func(r *rand.Rand, _ int) error {
				_, err := db.Get(ccKey(z.scrambled(r)))
				return err
			}
			if err := ccParallel(*ccKeys, *ccReaders, read); err != nil { // warm up
				b.Fatal(err)
			}
			s0, _ := db.Stats()
			cpu0 := cpuTime()
			b.ResetTimer()
			start := time.Now()
			if err := ccParallel(b.N, *ccReaders, read); err != nil {
				b.Fatal(err)
			}
			el := time.Since(start)
			b.StopTimer()
			cpu := cpuTime() - cpu0
			s1, _ := db.Stats()
			hits, misses := s1.ValueCacheHits-s0.ValueCacheHits, s1.ValueCacheMisses-s0.ValueCacheMisses
			ratio := 0.0
			if hits+misses > 0 {
				ratio = float64(hits) / float64(hits+misses)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "reads/s")
			b.ReportMetric(ratio, "hit-ratio")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/read")
			b.ReportMetric(float64(s1.ValueCacheBytes)/(1<<20), "cache-MiB")
			b.ReportMetric(float64(s1.ValueCacheEvictions-s0.ValueCacheEvictions), "evictions")
		})
	}
}

// ---- load + YCSB A, by codec and value kind ----

// BenchmarkCompressLoadA loads -cc.ckeys values of -cc.cvalue bytes with
// -cc.readers writers (NoSync, as a bulk load), then runs -cc.cops
// operations of YCSB A (50% reads, 50% updates, scrambled zipfian; NoSync,
// value cache off so reads decode every time), for each codec in -cc.codecs
// and value kind (text-like, random). Reported per phase: MB/s of value
// bytes (load) and ops/s (A), CPU ms per MB of value bytes written or read,
// the heap's live and stored bytes, and the directory's size on disk after
// a checkpoint.
func BenchmarkCompressLoadA(b *testing.B) {
	for _, kind := range []string{"text", "random"} {
		for _, codecName := range strings.Split(*ccCodecs, ",") {
			codec, err := heapkv.ParseCodec(codecName)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(kind+"/"+codecName, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					compressLoadA(b, kind, codec)
				}
			})
		}
	}
}

func compressLoadA(b *testing.B, kind string, codec heapkv.Codec) {
	dir := ccTempDir(b, "compress")
	defer ccRemove(dir)
	db := ccOpen(b, dir, heapkv.Options{NoSync: true, Compression: codec, ValueCacheSize: -1})
	defer func() {
		if db != nil {
			db.Close()
		}
	}()
	n, size := *ccCKeys, *ccCValue
	mb := float64(n) * float64(size) / 1e6
	ccValueFor(kind, 0, 0, size) // build the value pool before timing

	cpu0, start := cpuTime(), time.Now()
	err := ccParallel(n, *ccReaders, func(r *rand.Rand, i int) error {
		return db.Put(ccKey(uint64(i)), ccValueFor(kind, uint64(i), 0, size))
	})
	if err == nil {
		err = db.Sync()
	}
	if err != nil {
		b.Fatal(err)
	}
	loadEl, loadCPU := time.Since(start), cpuTime()-cpu0

	z := newZipfian(uint64(n), *ccTheta)
	var ver atomic.Uint64
	var opMB atomic.Int64
	cpu0, start = cpuTime(), time.Now()
	err = ccParallel(*ccCOps, *ccReaders, func(r *rand.Rand, i int) error {
		k := z.scrambled(r)
		if r.IntN(2) == 0 {
			_, err := db.Get(ccKey(k))
			opMB.Add(int64(size))
			return err
		}
		opMB.Add(int64(size))
		return db.Put(ccKey(k), ccValueFor(kind, k, ver.Add(1), size))
	})
	if err == nil {
		err = db.Sync()
	}
	if err != nil {
		b.Fatal(err)
	}
	aEl, aCPU := time.Since(start), cpuTime()-cpu0
	if err := db.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	s, err := db.Stats()
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	db = nil
	disk := ccDiskBytes(dir)
	aMB := float64(opMB.Load()) / 1e6
	b.ReportMetric(mb/loadEl.Seconds(), "load-MB/s")
	b.ReportMetric(float64(loadCPU.Milliseconds())/mb, "load-cpu-ms/MB")
	b.ReportMetric(float64(*ccCOps)/aEl.Seconds(), "A-ops/s")
	b.ReportMetric(float64(aCPU.Milliseconds())/aMB, "A-cpu-ms/MB")
	b.ReportMetric(float64(s.HeapValueBytes)/(1<<20), "value-MiB")
	b.ReportMetric(float64(s.HeapStoredBytes)/(1<<20), "stored-MiB")
	b.ReportMetric(float64(s.HeapLiveBytes)/(1<<20), "heap-live-MiB")
	b.ReportMetric(float64(disk)/(1<<20), "disk-MiB")
	b.ReportMetric(float64(s.HeapValuesCompressed)/float64(max(s.HeapValuesWritten, 1)), "compressed-frac")
}

// ccDiskBytes returns the bytes allocated on disk under dir.
func ccDiskBytes(dir string) int64 {
	var total int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if n, ok := AllocatedBytes(fi); ok {
				total += n
			} else {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}
