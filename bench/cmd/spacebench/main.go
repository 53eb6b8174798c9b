//go:build unix

// Command spacebench measures how heapkv gives disk space back (issue 17,
// must-show 3). Two experiments, each in a fresh directory:
//
//	spacebench -exp delete90 -size 1G
//	    load values until the heap holds SIZE bytes, delete 90% of them
//	    (every key but each tenth; with -pattern tail, the newest 90%),
//	    then run Compact twice: first with
//	    MaxLive -1 (punch holes and cut the end only), then with the
//	    defaults (move values out of sparse segments too). The heap file's
//	    size and the bytes the file system allocated to it (stat(2)
//	    st_blocks) are printed after each step.
//	spacebench -exp churn -size 512M -duration 60s [-compact 5s]
//	    load SIZE bytes, then run writers that overwrite (half) and delete
//	    (half) random keys for DURATION, sampling the heap file's size,
//	    its allocated bytes and the live bytes every -sample; with
//	    -compact, Compact runs again that long after each one ends, with
//	    -maxlive and -rate as its MaxLive and BytesPerSecond.
//	spacebench -exp incremental -size 1G
//	    load SIZE bytes, back the database up, rewrite 1% of the values,
//	    back it up again into the same directory (an increment), and
//	    compare the copy with the source key by key.
//
// Values are 1,000 to 8,999 bytes (not powers of two). Output: one JSON
// object per line (step or sample), for BENCHMARKS.md.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"iter"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heapkv/heapkv"
)

func main() {
	exp := flag.String("exp", "delete90", "experiment: delete90 or churn")
	dir := flag.String("dir", "", "database directory (must not exist); default: a new one under $TMPDIR")
	sizeFlag := flag.String("size", "1G", "value bytes to load (suffix K, M or G)")
	duration := flag.Duration("duration", 60*time.Second, "churn: how long the writers run")
	writers := flag.Int("writers", 4, "churn: writer goroutines")
	compactEvery := flag.Duration("compact", 0, "churn: run Compact again this long after each one ends (0: never)")
	sample := flag.Duration("sample", time.Second, "churn: sampling interval")
	sync := flag.Bool("sync", false, "churn: durable writes (default: NoSync; a Sync every second)")
	maxLive := flag.Float64("maxlive", 0, "churn: CompactOptions.MaxLive (0: the default)")
	rate := flag.Int64("rate", 0, "churn: CompactOptions.BytesPerSecond (0: no limit)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the experiment (after the load) to `FILE`")
	minHole := flag.Int64("minhole", 0, "CompactOptions.MinHoleBytes (0: the default)")
	pattern := flag.String("pattern", "spread", "delete90: which 90% is deleted: spread (all but every tenth key) or tail (the newest 90%)")
	flag.Parse()
	size, err := parseSize(*sizeFlag)
	if err != nil {
		log.Fatal(err)
	}
	if *dir == "" {
		root, err := os.MkdirTemp("", "spacebench-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(root)
		*dir = filepath.Join(root, "db")
	}
	db, err := heapkv.Open(*dir, &heapkv.Options{NoSync: !*sync, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		log.Fatal(err)
	}
	b := &bench{db: db, heap: filepath.Join(*dir, "heap"), start: time.Now()}
	n := b.load(size)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	switch *exp {
	case "delete90":
		b.delete90(n, *pattern == "tail", *minHole)
	case "incremental":
		b.incremental(n, filepath.Join(filepath.Dir(*dir), "backup"))
	case "churn":
		b.churn(n, *writers, *duration, *compactEvery, *sample, &heapkv.CompactOptions{MaxLive: *maxLive, BytesPerSecond: *rate, MinHoleBytes: *minHole})
	default:
		log.Fatalf("unknown experiment %q", *exp)
	}
	if err := db.Close(); err != nil {
		log.Fatal(err)
	}
}

type bench struct {
	db    *heapkv.DB
	heap  string
	start time.Time
}

func key(i int) []byte { return binary.BigEndian.AppendUint64([]byte("k"), uint64(i)) }

// value returns a value of 1,000 to 8,999 bytes.
func value(rng *rand.Rand) []byte {
	v := make([]byte, 1000+rng.IntN(8000))
	for i := 0; i+8 <= len(v); i += 8 {
		binary.LittleEndian.PutUint64(v[i:], rng.Uint64())
	}
	return v
}

// load writes values until their bytes reach size and returns how many.
func (b *bench) load(size int64) int {
	rng := rand.New(rand.NewPCG(1, 2))
	var total int64
	n := 0
	for total < size {
		batch := b.db.NewBatch()
		for range 100 {
			v := value(rng)
			batch.Put(key(n), v)
			n++
			total += int64(len(v))
		}
		if err := b.db.Apply(batch, &heapkv.WriteOptions{}); err != nil {
			log.Fatal(err)
		}
	}
	if err := b.db.Sync(); err != nil {
		log.Fatal(err)
	}
	b.emit("loaded", map[string]any{"values": n, "value_bytes": total})
	return n
}

// delete90 deletes every key but each tenth (or, with tail, every key but
// the first tenth), then compacts in two steps.
func (b *bench) delete90(n int, tail bool, minHole int64) {
	batch := b.db.NewBatch()
	for i := range n {
		if (!tail && i%10 == 0) || (tail && i < n/10) {
			continue
		}
		batch.Delete(key(i))
		if batch.Len() == 1000 {
			if err := b.db.Apply(batch, &heapkv.WriteOptions{}); err != nil {
				log.Fatal(err)
			}
			batch = b.db.NewBatch()
		}
	}
	if err := b.db.Apply(batch, &heapkv.WriteOptions{Sync: true}); err != nil {
		log.Fatal(err)
	}
	b.emit("deleted 90%", nil)
	for _, step := range []struct {
		name string
		opts heapkv.CompactOptions
	}{
		{"compact MaxLive=-1 (punch and cut only)", heapkv.CompactOptions{MaxLive: -1, MinHoleBytes: minHole}},
		{"compact (defaults: move, punch, cut)", heapkv.CompactOptions{MinHoleBytes: minHole}},
	} {
		cpu0, t0 := cpuSeconds(), time.Now()
		res, err := b.db.Compact(context.Background(), &step.opts)
		if err != nil {
			log.Fatal(err)
		}
		b.emit(step.name, map[string]any{"seconds": time.Since(t0).Seconds(), "cpu_seconds": cpuSeconds() - cpu0, "result": res})
	}
}

// incremental measures a full and an incremental backup (see above).
func (b *bench) incremental(n int, dest string) {
	for round := range 2 {
		if round == 1 {
			rng := rand.New(rand.NewPCG(5, 6))
			batch := b.db.NewBatch()
			for range n / 100 {
				batch.Put(key(rng.IntN(n)), value(rng))
			}
			if err := b.db.Apply(batch, &heapkv.WriteOptions{Sync: true}); err != nil {
				log.Fatal(err)
			}
		}
		cpu0, t0 := cpuSeconds(), time.Now()
		st, err := b.db.Backup(context.Background(), dest, nil)
		if err != nil {
			log.Fatal(err)
		}
		b.emit([]string{"full backup", "incremental backup after 1% rewritten"}[round], map[string]any{
			"seconds": time.Since(t0).Seconds(), "cpu_seconds": cpuSeconds() - cpu0, "export": st})
	}
	cp, err := heapkv.Open(dest, &heapkv.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer cp.Close()
	var e1, e2 error
	next, stop := iter.Pull2(cp.Scan(nil, &e2))
	defer stop()
	keys := 0
	for k, v := range b.db.Scan(nil, &e1) {
		k2, v2, ok := next()
		if !ok || !bytes.Equal(k, k2) || !bytes.Equal(v, v2) {
			log.Fatalf("the copy differs from the source at key %x", k)
		}
		keys++
	}
	if _, _, ok := next(); ok || e1 != nil || e2 != nil {
		log.Fatalf("the copy holds more keys than the source, or a scan failed: %v %v", e1, e2)
	}
	b.emit("the copy equals the source", map[string]any{"keys": keys})
}

// churn overwrites and deletes random keys for d, sampling space.
func (b *bench) churn(n, writers int, d, compactEvery, sample time.Duration, co *heapkv.CompactOptions) {
	var ops, compactions atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w)+10, 3))
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := key(rng.IntN(n))
				var err error
				if rng.IntN(2) == 0 {
					err = b.db.Delete(k)
				} else {
					err = b.db.Put(k, value(rng))
				}
				if err != nil {
					log.Fatal(err)
				}
				ops.Add(1)
			}
		})
	}
	if compactEvery > 0 {
		wg.Go(func() {
			for {
				if _, err := b.db.Compact(context.Background(), co); err != nil {
					log.Fatal(err)
				}
				compactions.Add(1)
				select {
				case <-stop:
					return
				case <-time.After(compactEvery):
				}
			}
		})
	}
	t0, cpu0 := time.Now(), cpuSeconds()
	tick := time.NewTicker(sample)
	var last int64
	for end := t0.Add(d); time.Now().Before(end); {
		<-tick.C
		o := ops.Load()
		b.emit("sample", map[string]any{"ops": o, "ops_per_s": float64(o-last) / sample.Seconds(), "compactions": compactions.Load()})
		last = o
	}
	tick.Stop()
	close(stop)
	wg.Wait()
	secs := time.Since(t0).Seconds()
	b.emit("churn done", map[string]any{"ops": ops.Load(), "ops_per_s": float64(ops.Load()) / secs,
		"cpu_us_per_op": (cpuSeconds() - cpu0) * 1e6 / float64(ops.Load()), "compactions": compactions.Load(), "compact_every": compactEvery.String(),
		"maxlive": co.MaxLive, "rate": co.BytesPerSecond, "minhole": co.MinHoleBytes})
}

// emit prints one line: the step, the heap file's size and allocated
// bytes (stat), the live heap bytes (Stats) and extra fields.
func (b *bench) emit(step string, extra map[string]any) {
	st, err := b.db.Stats()
	if err != nil {
		log.Fatal(err)
	}
	fi, err := os.Stat(b.heap)
	if err != nil {
		log.Fatal(err)
	}
	rec := map[string]any{
		"t":              time.Since(b.start).Seconds(),
		"step":           step,
		"file_bytes":     fi.Size(),
		"allocated":      fi.Sys().(*syscall.Stat_t).Blocks * 512,
		"live_bytes":     st.HeapLiveBytes,
		"segments":       st.HeapSegments,
		"empty_segments": st.HeapEmptySegments,
	}
	for k, v := range extra {
		rec[k] = v
	}
	out, err := json.Marshal(rec)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	u := strings.ToUpper(s)
	if n := len(u); n > 0 {
		if i := strings.IndexByte("KMG", u[n-1]); i >= 0 {
			mult, u = int64(1)<<(10*(i+1)), u[:n-1]
		}
	}
	v, err := strconv.ParseInt(u, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("size %q: want bytes such as 1073741824 or 1G", s)
	}
	return v * mult, nil
}
