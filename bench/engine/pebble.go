package engine

import (
	"errors"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv/enginebench"
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
	db *pebble.DB
	wo *pebble.WriteOptions
}

func openPebble(dir string, sync bool, o *pebble.Options) (DB, error) {
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
	return &pebbleDB{db: db, wo: wo}, nil
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
