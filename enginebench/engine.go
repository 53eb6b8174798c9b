// Package enginebench compares heapkv's core write path with Pebble.
//
// It holds no tests: the benchmarks in put_bench_test.go run only with
// -bench. See BENCHMARKS.md ("Core engine: Put throughput and space") for
// the commands and results.
package enginebench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/heapkv/heapkv"
)

// Engine is the minimal write interface the benchmarks drive.
type Engine interface {
	// Put writes one key; sync asks for durability before it returns.
	Put(key, value []byte, sync bool) error
	// Sync makes every earlier write durable.
	Sync() error
	// Settle waits (at most max) until the engine's own background work
	// (flushes, compactions) is idle.
	Settle(max time.Duration)
	// Compact runs the engine's manual space reclamation: a full manual
	// compaction for Pebble, a checkpoint for heapkv.
	Compact() error
	// Metrics returns engine specific numbers to report (fsyncs ...).
	Metrics() map[string]float64
	Close() error
}

// Config names an engine configuration.
type Config struct {
	Name string
	// Open opens the engine in dir; sync says whether the run's writes are
	// synced (heapkv chooses Options.NoSync from it).
	Open func(dir string, sync bool) (Engine, error)
}

// Configs are the engines compared, in the order they run.
var Configs = []Config{
	{"heapkv", openHeapKV},
	{"heapkv-4k", openHeapKV4K},
	{"pebble-tuned", func(dir string, _ bool) (Engine, error) { return openPebble(dir, TunedPebbleOptions(quietLogger{})) }},
	{"pebble-vsep", func(dir string, _ bool) (Engine, error) { return openPebble(dir, ValueSepPebbleOptions(quietLogger{})) }},
	{"pebble-default", func(dir string, _ bool) (Engine, error) { return openPebble(dir, DefaultPebbleOptions()) }},
}

// ---- heapkv ----

type heapEngine struct {
	db *heapkv.DB
}

// HeapCarryLimit, if not 0, is the heapkv engine's Options.CarryLimit
// (the benchmarks' -enginebench.carrylimit, for sweeping it).
var HeapCarryLimit int

// HeapBlockSize, if not 0, is the heapkv engine's Options.BlockSize (the
// benchmarks' -enginebench.blocksize).
var HeapBlockSize int

func openHeapKV(dir string, sync bool) (Engine, error) {
	// Defaults, except NoSync for the non-durable runs (the user's knob).
	return openHeap(dir, &heapkv.Options{NoSync: !sync, CarryLimit: HeapCarryLimit, BlockSize: HeapBlockSize})
}

// openHeapKV4K opens heapkv with the heap geometry of the releases before
// 128-byte blocks: 4 KiB blocks, values up to 2 KiB inline.
func openHeapKV4K(dir string, sync bool) (Engine, error) {
	return openHeap(dir, &heapkv.Options{NoSync: !sync, CarryLimit: HeapCarryLimit, BlockSize: 4096, InlineThreshold: 2048})
}

func openHeap(dir string, o *heapkv.Options) (Engine, error) {
	o.Logger = quietSlog
	db, err := heapkv.Open(dir, o)
	if err != nil {
		return nil, err
	}
	return &heapEngine{db: db}, nil
}

func (e *heapEngine) Put(k, v []byte, sync bool) error {
	// db.Put uses the database's default durability, which openHeapKV set
	// to match the run; Apply with WriteOptions would allocate the same.
	return e.db.Put(k, v)
}
func (e *heapEngine) Sync() error          { return e.db.Sync() }
func (e *heapEngine) Settle(time.Duration) { time.Sleep(time.Second) } // background checkpoints only
func (e *heapEngine) Compact() error       { return e.db.Checkpoint() }
func (e *heapEngine) Close() error         { return e.db.Close() }
func (e *heapEngine) Metrics() map[string]float64 {
	s, err := e.db.Stats()
	if err != nil {
		return nil
	}
	return map[string]float64{
		"fsyncs":       float64(s.Fsyncs),
		"avg-group":    s.AvgGroupSize,
		"heap-MiB":     float64(s.HeapFileBytes) / (1 << 20),
		"log-MiB":      float64(s.LogBytes) / (1 << 20),
		"log-prepared": float64(s.LogSegmentsPrepared),
		"index-MiB":    float64(s.IndexBytes) / (1 << 20),
	}
}

// ---- pebble ----

// Loggers that keep benchmark output parseable (warnings go to stderr).
var quietSlog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)         {}
func (quietLogger) Errorf(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) }
func (quietLogger) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

// DefaultPebbleOptions is pebble.Options{} with EnsureDefaults: 8 MiB block
// cache, 4 MiB memtable, oldest supported format.
func DefaultPebbleOptions() *pebble.Options {
	o := &pebble.Options{Logger: quietLogger{}}
	o.EnsureDefaults()
	return o
}

// TunedPebbleOptions is Pebble as a user would run it for this workload:
// 1 GiB block cache, 64 MiB memtable, 10-bit Bloom filters at every level,
// newest format, its WAL on; L0 and compaction settings left at their
// defaults; Pebble logs to logger. It is
// the one definition of "pebble-tuned": the bench module's engine uses it
// too. The caller owns a reference to the cache (Unref it after Open).
func TunedPebbleOptions(logger pebble.Logger) *pebble.Options {
	o := &pebble.Options{
		Cache:              pebble.NewCache(1 << 30),
		MemTableSize:       64 << 20,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             logger,
	}
	// Bloom filters, as heapkv's index has (index.go): point lookups of
	// keys a table does not hold skip it. L1+ inherit L0's policy.
	o.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	o.EnsureDefaults()
	return o
}

// ValueSepPebbleOptions is TunedPebbleOptions with value separation (blob
// files, needs FormatValueSeparation, which FormatNewest includes): the
// "pebble-vsep" engine here and in the bench module. The policy is
// cmd/pebble's except MinimumSize 256 (CockroachDB's default) and blob
// rewrites enabled at 20% garbage after one minute, so that Pebble can
// reclaim overwritten values within a run.
func ValueSepPebbleOptions(logger pebble.Logger) *pebble.Options {
	o := TunedPebbleOptions(logger)
	o.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           256,
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     time.Minute,
			TargetGarbageRatio:    0.2,
		}
	}
	return o
}

type pebbleEngine struct {
	db *pebble.DB
	o  *pebble.Options
}

func openPebble(dir string, o *pebble.Options) (Engine, error) {
	db, err := pebble.Open(dir, o)
	if o.Cache != nil {
		o.Cache.Unref() // the DB holds its own reference
	}
	if err != nil {
		return nil, err
	}
	return &pebbleEngine{db: db, o: o}, nil
}

func (e *pebbleEngine) Put(k, v []byte, sync bool) error {
	if sync {
		return e.db.Set(k, v, pebble.Sync)
	}
	return e.db.Set(k, v, pebble.NoSync)
}

func (e *pebbleEngine) Sync() error { return e.db.LogData(nil, pebble.Sync) }

func (e *pebbleEngine) Settle(max time.Duration) {
	deadline := time.Now().Add(max)
	idle := 0
	for time.Now().Before(deadline) && idle < 4 {
		m := e.db.Metrics()
		if m.Compact.NumInProgress == 0 && m.Flush.NumInProgress == 0 {
			idle++
		} else {
			idle = 0
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (e *pebbleEngine) Compact() error {
	if err := e.db.Flush(); err != nil {
		return err
	}
	return e.db.Compact(context.Background(), []byte{0}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, true)
}

func (e *pebbleEngine) Close() error { return e.db.Close() }

func (e *pebbleEngine) Metrics() map[string]float64 {
	m := e.db.Metrics()
	var compacted, flushed uint64
	for _, l := range m.Levels {
		compacted += l.TableBytesCompacted + l.BlobBytesCompacted
		flushed += l.TableBytesFlushed + l.BlobBytesFlushed
	}
	return map[string]float64{
		"compacted-MiB": float64(compacted) / (1 << 20),
		"flushed-MiB":   float64(flushed) / (1 << 20),
		"l0-files":      float64(m.Levels[0].TablesCount),
	}
}

// ---- workload data ----

// KeySize is the key length in bytes.
const KeySize = 16

func mix64(x uint64) uint64 { // splitmix64 finaliser
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Key writes the 16-byte key of sequence number i into dst: a hash of i,
// so consecutive inserts are spread over the key space.
func Key(dst []byte, i uint64) []byte {
	dst = dst[:KeySize]
	binary.BigEndian.PutUint64(dst[0:], mix64(i))
	binary.BigEndian.PutUint64(dst[8:], mix64(i^0x5555555555555555))
	return dst
}

const randBufSize = 64 << 20

var (
	randOnce sync.Once
	randBuf  []byte
)

// Value returns size incompressible bytes for (sequence i, version ver):
// a window of a 64 MiB random buffer at a hashed offset. The caller must
// not modify it.
func Value(i, ver uint64, size int) []byte {
	randOnce.Do(func() {
		r := rand.NewChaCha8([32]byte{'h', 'e', 'a', 'p', 'k', 'v'})
		randBuf = make([]byte, randBufSize+(64<<10))
		r.Read(randBuf)
	})
	off := mix64(i*0x100000001b3^ver) % randBufSize
	return randBuf[off : off+uint64(size)]
}

// DiskUsage returns the apparent size (sum of file sizes) and the
// allocated size (st_blocks*512, what du reports) of every file under dir,
// except heapkv's space reserve (a fixed, fallocated RESERVE file of
// Options.DiskReserve bytes, 120 MiB by default): space amplification is
// about what the data costs, and the reserve does not grow with it.
func DiskUsage(dir string) (apparent, allocated int64, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) { // removed by a compaction meanwhile
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() == "RESERVE" {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		apparent += fi.Size()
		if n, ok := AllocatedBytes(fi); ok {
			allocated += n
		} else {
			allocated += fi.Size()
		}
		return nil
	})
	return apparent, allocated, err
}

// UsageByKind returns allocated bytes (du) under dir grouped by file kind:
// the extension (".sst", ".blob", ".log") or the base name ("heap").
func UsageByKind(dir string) map[string]int64 {
	m := map[string]int64{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		kind := filepath.Ext(p)
		if kind == "" || len(kind) > 6 {
			kind = filepath.Base(p)
		}
		if n, ok := AllocatedBytes(fi); ok {
			m[kind] += n
		}
		return nil
	})
	return m
}

// TempDir makes a fresh data directory under base (or $TMPDIR); the
// caller removes it.
func TempDir(base, name string) (string, error) {
	return os.MkdirTemp(base, "enginebench-"+name+"-")
}
