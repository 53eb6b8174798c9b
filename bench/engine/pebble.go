package engine

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/enginebench"
	dto "github.com/prometheus/client_model/go"
)

func init() {
	register(Config{"pebble", "Pebble v2 with its defaults (8 MiB cache, 4 MiB memtable)", func(dir string, sync bool) (DB, error) {
		o := &pebble.Options{Logger: quietLogger{}}
		return openPebble(dir, sync, o)
	}})
	// The tuned settings are enginebench's, so that both benchmark suites
	// run the same Pebble.
	register(Config{"pebble-tuned", "Pebble v2, 1 GiB block cache, 64 MiB memtable, Bloom filters, FormatNewest, values inline", func(dir string, sync bool) (DB, error) {
		return openPebble(dir, sync, enginebench.TunedPebbleOptions(quietLogger{}))
	}})
	register(Config{"pebble-vsep", "pebble-tuned with value separation (blob files for values >= 256 B)", func(dir string, sync bool) (DB, error) {
		return openPebble(dir, sync, enginebench.ValueSepPebbleOptions(quietLogger{}))
	}})
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{})  {}
func (quietLogger) Errorf(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic("pebble fatal: " + format)
}

type pebbleDB struct {
	db    *pebble.DB
	wo    *pebble.WriteOptions
	cache *pebble.Cache // the block cache it opened with (tests)
}

// pebbleCacheSize, if not 0, replaces the 1 GiB block cache of the
// engines that set one (pebble-tuned, pebble-vsep): SetPebbleCacheSize.
var pebbleCacheSize int64

// SetPebbleCacheSize gives the Pebble engines with a block cache of their
// own (pebble-tuned, pebble-vsep) one of n bytes instead of 1 GiB, for
// comparisons in which Pebble's cache should match another engine's
// memory (ycsb -pebblecache). It applies to engines opened after the call.
func SetPebbleCacheSize(n int64) { pebbleCacheSize = n }

func openPebble(dir string, sync bool, o *pebble.Options) (DB, error) {
	if o.Cache != nil && pebbleCacheSize > 0 {
		o.Cache.Unref()
		o.Cache = pebble.NewCache(pebbleCacheSize)
	}
	cache := o.Cache
	o.EnsureDefaults()
	db, err := pebble.Open(dir, o)
	if o.Cache != nil {
		o.Cache.Unref() // the DB holds its own reference
	}
	if err != nil {
		return nil, err
	}
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	return &pebbleDB{db: db, wo: wo, cache: cache}, nil
}

func (p *pebbleDB) Insert(k, v []byte) error { return p.db.Set(k, v, p.wo) }
func (p *pebbleDB) Update(k, v []byte) error { return p.db.Set(k, v, p.wo) }
func (p *pebbleDB) Read(k []byte) ([]byte, error) {
	v, c, err := p.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	return out, c.Close()
}

func (p *pebbleDB) Scan(start []byte, n int) (int, error) {
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: start})
	if err != nil {
		return 0, err
	}
	got, sum := 0, uint64(0)
	defer func() { touchSink.Add(sum) }()
	for ok := it.SeekGE(start); ok && got < n; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return got, err
		}
		sum += touch(v)
		got++
	}
	return got, it.Close()
}

func (p *pebbleDB) Close() error {
	if err := p.db.Flush(); err != nil {
		p.db.Close()
		return err
	}
	return p.db.Close()
}

// Counters reports Pebble's own work from its metrics: the WAL's device
// flushes (syncs) and their total time, the bytes written to the WAL,
// memtable flushes, compactions, and block cache hits and misses. With
// the runner's commit count (its operations), ops / syncs is how many
// writes shared a WAL flush, the figure heapkv reports as commits / syncs.
func (p *pebbleDB) Counters() (map[string]float64, error) {
	m := p.db.Metrics()
	c := map[string]float64{
		"syncs":              0,
		"sync_seconds":       0,
		"wal_bytes_written":  float64(m.WAL.BytesWritten),
		"flushes":            float64(m.Flush.Count),
		"compactions":        float64(m.Compact.Count),
		"block_cache_hits":   float64(m.BlockCache.Hits),
		"block_cache_misses": float64(m.BlockCache.Misses),
	}
	if h := m.LogWriter.FsyncLatency; h != nil {
		var d dto.Metric
		if err := h.Write(&d); err != nil {
			return nil, fmt.Errorf("pebble: read the WAL's fsync latency histogram: %w", err)
		}
		// Pebble observes each WAL sync's duration in nanoseconds
		// (record.LogWriter's flush loop).
		c["syncs"] = float64(d.GetHistogram().GetSampleCount())
		c["sync_seconds"] = d.GetHistogram().GetSampleSum() / 1e9
	}
	return c, nil
}
