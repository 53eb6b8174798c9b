// Package txnbench puts heapkv's transactions and scans side by side with
// Badger's (issue "Transactions, snapshots and iterators", Must show 6).
// Pebble's side of the same workloads is in ../../enginebench; Badger lives
// here so that it never enters the main module.
//
//	cd bench && go test ./txnbench -run '^$' -bench . -benchtime 2000x
//
// BenchmarkTxnCommit: each op is one transaction that reads two keys and
// writes both (256-byte values), retried on conflict; low conflict draws
// keys from 100,000, high conflict from 8 hot keys. heapkv runs snapshot
// isolation and serializable transactions; Badger's transactions are
// serializable (it tracks reads), so "heapkv-ser" is the like-for-like row.
// BenchmarkScan: values under hashed keys, then a full scan reading every
// value (one op) or 100-key range scans from random starts (one op each).
package txnbench

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/heapkv/heapkv"
)

var scanBytes = flag.Int64("txnbench.scanbytes", 32<<20, "BenchmarkScan: bytes of values loaded per engine")

const (
	txnValueSize = 256
	lowKeys      = 100_000
	hotKeys      = 8
)

func key(i uint64) []byte {
	var k [16]byte
	binary.BigEndian.PutUint64(k[:], i*0x9E3779B97F4A7C15)
	binary.BigEndian.PutUint64(k[8:], i)
	return k[:]
}

func value(seed uint64, n int) []byte {
	v := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range v {
		v[i] = byte(r.Uint32())
	}
	return v
}

type txnEngine interface {
	load(n int, size int) error
	transfer(a, b []byte) error // ErrConflict-like errors are retried
	scanAll() (int, error)
	scanRange(start []byte, n int) (int, error)
	close() error
}

var errRetry = errors.New("retry")

type heapEngine struct {
	db  *heapkv.DB
	ser bool
}

func openHeap(dir string, sync, ser bool) (txnEngine, error) {
	db, err := heapkv.Open(dir, &heapkv.Options{NoSync: !sync, IndexCacheSize: 1 << 30})
	return &heapEngine{db: db, ser: ser}, err
}

func (e *heapEngine) load(n, size int) error {
	for i := 0; i < n; {
		b := e.db.NewBatch()
		for j := 0; j < 256 && i < n; j, i = j+1, i+1 {
			b.Put(key(uint64(i)), value(uint64(i), size))
		}
		if err := e.db.Apply(b, nil); err != nil {
			return err
		}
	}
	return e.db.Sync()
}

func (e *heapEngine) transfer(a, b []byte) error {
	err := e.db.UpdateTxn(&heapkv.TxnOptions{Serializable: e.ser}, func(txn *heapkv.Txn) error {
		va, err := txn.Get(a)
		if err != nil {
			return err
		}
		vb, err := txn.Get(b)
		if err != nil {
			return err
		}
		if err := txn.Put(a, vb); err != nil {
			return err
		}
		return txn.Put(b, va)
	})
	if errors.Is(err, heapkv.ErrConflict) {
		return errRetry
	}
	return err
}

// iterate reads count values from start (every value from the first key
// when count is 0) and returns the bytes read.
func (e *heapEngine) iterate(start []byte, count int) (int, error) {
	it, err := e.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	n := 0
	for ok, i := it.SeekGE(start), 0; ok && (count <= 0 || i < count); ok, i = it.Next(), i+1 {
		v, err := it.Value()
		if err != nil {
			it.Close()
			return n, err
		}
		v = append([]byte(nil), v...) // a copy the caller owns, as Badger's ValueCopy(nil)
		n += len(v)
	}
	return n, it.Close()
}

func (e *heapEngine) scanAll() (int, error)                  { return e.iterate(nil, 0) }
func (e *heapEngine) scanRange(s []byte, c int) (int, error) { return e.iterate(s, c) }
func (e *heapEngine) close() error                           { return e.db.Close() }

type badgerEngine struct{ db *badger.DB }

func openBadger(dir string, sync bool, vlog bool) (txnEngine, error) {
	o := badger.DefaultOptions(dir).WithSyncWrites(sync).WithLogger(nil)
	if vlog {
		o = o.WithValueThreshold(1 << 10)
	}
	db, err := badger.Open(o)
	return &badgerEngine{db: db}, err
}

func (e *badgerEngine) load(n, size int) error {
	wb := e.db.NewWriteBatch()
	for i := 0; i < n; i++ {
		if err := wb.Set(key(uint64(i)), value(uint64(i), size)); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return e.db.Sync()
}

func (e *badgerEngine) transfer(a, b []byte) error {
	err := e.db.Update(func(txn *badger.Txn) error {
		ia, err := txn.Get(a)
		if err != nil {
			return err
		}
		va, err := ia.ValueCopy(nil)
		if err != nil {
			return err
		}
		ib, err := txn.Get(b)
		if err != nil {
			return err
		}
		vb, err := ib.ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := txn.Set(a, vb); err != nil {
			return err
		}
		return txn.Set(b, va)
	})
	if errors.Is(err, badger.ErrConflict) {
		return errRetry
	}
	return err
}

func (e *badgerEngine) iterate(start []byte, count int) (int, error) {
	n := 0
	err := e.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		if count > 0 {
			o.PrefetchSize = min(count, 100)
		}
		it := txn.NewIterator(o)
		defer it.Close()
		i := 0
		for it.Seek(start); it.Valid() && (count <= 0 || i < count); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			n += len(v)
			i++
		}
		return nil
	})
	return n, err
}

func (e *badgerEngine) scanAll() (int, error)                  { return e.iterate(nil, 0) }
func (e *badgerEngine) scanRange(s []byte, c int) (int, error) { return e.iterate(s, c) }
func (e *badgerEngine) close() error                           { return e.db.Close() }

type engineConf struct {
	name string
	open func(dir string, sync bool) (txnEngine, error)
}

var txnEngines = []engineConf{
	{"heapkv-si", func(d string, s bool) (txnEngine, error) { return openHeap(d, s, false) }},
	{"heapkv-ser", func(d string, s bool) (txnEngine, error) { return openHeap(d, s, true) }},
	{"badger", func(d string, s bool) (txnEngine, error) { return openBadger(d, s, false) }},
}

var scanEngines = []engineConf{
	{"heapkv", func(d string, s bool) (txnEngine, error) { return openHeap(d, s, false) }},
	{"badger", func(d string, s bool) (txnEngine, error) { return openBadger(d, s, false) }},
	{"badger-vlog", func(d string, s bool) (txnEngine, error) { return openBadger(d, s, true) }},
}

func BenchmarkTxnCommit(b *testing.B) {
	for _, writers := range []int{1, 64} {
		for _, conflict := range []string{"low", "high"} {
			for _, sync := range []bool{false, true} {
				for _, ec := range txnEngines {
					name := fmt.Sprintf("writers=%d/conflict=%s/sync=%v/engine=%s", writers, conflict, sync, ec.name)
					b.Run(name, func(b *testing.B) { benchTxn(b, ec, writers, conflict == "high", sync) })
				}
			}
		}
	}
}

func benchTxn(b *testing.B, ec engineConf, writers int, high, sync bool) {
	e, err := ec.open(b.TempDir(), sync)
	if err != nil {
		b.Fatal(err)
	}
	defer e.close()
	nkeys := lowKeys
	if high {
		nkeys = hotKeys
	}
	if err := e.load(nkeys, txnValueSize); err != nil {
		b.Fatal(err)
	}
	var next, retries atomic.Uint64
	// RunParallel starts parallelism x GOMAXPROCS goroutines: writers of
	// them when writers is a multiple of GOMAXPROCS (64 on 1, 2, 4 ... 64
	// cores). One writer runs in a plain loop below.
	b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	run := func(pb interface{ Next() bool }, r *rand.Rand) {
		for pb.Next() {
			next.Add(1)
			a, c := uint64(r.IntN(nkeys)), uint64(r.IntN(nkeys))
			for c == a {
				c = uint64(r.IntN(nkeys))
			}
			for {
				err := e.transfer(key(a), key(c))
				if err == nil {
					break
				}
				if !errors.Is(err, errRetry) {
					b.Error(err)
					return
				}
				retries.Add(1)
			}
		}
	}
	if writers == 1 {
		r := rand.New(rand.NewPCG(1, 1))
		run(&loopPB{n: b.N}, r)
	} else {
		var seed atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			run(pb, rand.New(rand.NewPCG(seed.Add(1), 2)))
		})
	}
	b.StopTimer()
	b.ReportMetric(float64(retries.Load())/float64(b.N), "retries/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

type loopPB struct{ n int }

func (p *loopPB) Next() bool { p.n--; return p.n >= 0 }

func BenchmarkScan(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, kind := range []string{"full", "range100"} {
			for _, ec := range scanEngines {
				b.Run(fmt.Sprintf("value=%d/%s/engine=%s", size, kind, ec.name), func(b *testing.B) {
					e, err := ec.open(b.TempDir(), false)
					if err != nil {
						b.Fatal(err)
					}
					defer e.close()
					n := int(*scanBytes / int64(size))
					if err := e.load(n, size); err != nil {
						b.Fatal(err)
					}
					r := rand.New(rand.NewPCG(3, 3))
					var bytes int64
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						var got int
						var err error
						if kind == "full" {
							got, err = e.scanAll()
						} else {
							got, err = e.scanRange(key(uint64(r.IntN(n))), 100)
						}
						if err != nil {
							b.Fatal(err)
						}
						bytes += int64(got)
					}
					b.StopTimer()
					b.ReportMetric(float64(bytes)/1e6/b.Elapsed().Seconds(), "MB/s")
				})
			}
		}
	}
}
