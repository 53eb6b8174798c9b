package enginebench

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/heapkv/heapkv"
)

// Transactions and scans, heapkv against Pebble.
//
//	go test -run '^$' -bench 'TxnCommit' -benchtime 3000x ./enginebench
//	go test -run '^$' -bench 'Scan' -benchtime 20x ./enginebench
//
// BenchmarkTxnCommit: each op reads two keys and writes both (256-byte
// values) in one transaction, retried until it commits. Low conflict draws
// keys from 100,000; high conflict from 8 hot keys. heapkv runs snapshot
// isolation ("heapkv-si") and serializable ("heapkv-ser") transactions;
// Pebble has no transactions, so "pebble-batch" does the same reads and an
// atomic two-key batch with no isolation at all (no conflicts, lost
// updates possible): the cost floor of the I/O, not an equal contender;
// "heapkv-batch" does the same through heapkv (Get, Get, Apply), which
// separates the engine's write path from the transactions' own cost.
//
// BenchmarkScan: -enginebench.scanbytes of 1 KiB or 16 KiB values under
// hashed keys, loaded in key-hash order (so heapkv's heap holds them in
// write order, not key order), flushed, then either a full scan reading
// every value (one op = one scan) or range scans of 100 keys from a random
// start (one op = one range). heapkv with default options keeps 1 KiB
// values inline in its index and 16 KiB values in the heap; pebble-tuned
// keeps every value in its LSM, pebble-vsep puts values >= 256 bytes in
// blob files. heapkv's index gets pebble-tuned's 1 GiB block cache. Badger is compared in the separate comparison module (not
// in this go.mod), not here.

var flagScanBytes = flag.Int64("enginebench.scanbytes", 128<<20, "BenchmarkScan: bytes of values loaded per engine")

// ---- transactions ----

type txnEngine interface {
	// transfer reads a and b and writes both; it returns heapkv.ErrConflict
	// when the transaction must be retried.
	transfer(a, b []byte, ver uint64, sync bool) error
	load(n int) error
	close() error
}

type heapTxnEngine struct {
	db    *heapkv.DB
	ser   bool
	batch bool // no transaction: Gets and a Batch, like pebble-batch
}

func (e *heapTxnEngine) transfer(a, b []byte, ver uint64, sync bool) error {
	if e.batch {
		va, err := e.db.Get(a)
		if err != nil {
			return err
		}
		vb, err := e.db.Get(b)
		if err != nil {
			return err
		}
		bt := e.db.NewBatch()
		bt.Put(a, Value(uint64(va[0]), ver, txnValueSize))
		bt.Put(b, Value(uint64(vb[0]), ver, txnValueSize))
		return e.db.Apply(bt, &heapkv.WriteOptions{Sync: sync})
	}
	opts := &heapkv.TxnOptions{Serializable: e.ser, WriteOptions: &heapkv.WriteOptions{Sync: sync}}
	return e.db.UpdateTxn(opts, func(txn *heapkv.Txn) error {
		va, err := txn.Get(a)
		if err != nil {
			return err
		}
		vb, err := txn.Get(b)
		if err != nil {
			return err
		}
		if err := txn.Put(a, Value(uint64(va[0]), ver, txnValueSize)); err != nil {
			return err
		}
		return txn.Put(b, Value(uint64(vb[0]), ver, txnValueSize))
	})
}

func (e *heapTxnEngine) load(n int) error {
	kbuf := make([]byte, KeySize)
	for i := 0; i < n; {
		b := e.db.NewBatch()
		for ; i < n && b.Len() < 1000; i++ {
			b.Put(Key(kbuf, uint64(i)), Value(uint64(i), 0, txnValueSize))
		}
		if err := e.db.Apply(b, &heapkv.WriteOptions{}); err != nil {
			return err
		}
	}
	return e.db.Sync()
}

func (e *heapTxnEngine) close() error { return e.db.Close() }

type pebbleTxnEngine struct{ db *pebble.DB }

func (e *pebbleTxnEngine) transfer(a, b []byte, ver uint64, sync bool) error {
	var first [2]byte
	for i, k := range [][]byte{a, b} {
		v, closer, err := e.db.Get(k)
		if err != nil {
			return err
		}
		first[i] = v[0]
		closer.Close()
	}
	batch := e.db.NewBatch()
	defer batch.Close()
	batch.Set(a, Value(uint64(first[0]), ver, txnValueSize), nil)
	batch.Set(b, Value(uint64(first[1]), ver, txnValueSize), nil)
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	return batch.Commit(wo)
}

func (e *pebbleTxnEngine) load(n int) error {
	kbuf := make([]byte, KeySize)
	for i := 0; i < n; {
		b := e.db.NewBatch()
		for ; i < n && b.Count() < 1000; i++ {
			b.Set(Key(kbuf, uint64(i)), Value(uint64(i), 0, txnValueSize), nil)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
	}
	return e.db.LogData(nil, pebble.Sync)
}

func (e *pebbleTxnEngine) close() error { return e.db.Close() }

const txnValueSize = 256

var txnEngines = []struct {
	name string
	open func(dir string) (txnEngine, error)
}{
	{"heapkv-si", func(dir string) (txnEngine, error) { return openHeapTxn(dir, false) }},
	{"heapkv-ser", func(dir string) (txnEngine, error) { return openHeapTxn(dir, true) }},
	{"heapkv-batch", func(dir string) (txnEngine, error) {
		e, err := openHeapTxn(dir, false)
		if err == nil {
			e.(*heapTxnEngine).batch = true
		}
		return e, err
	}},
	{"pebble-batch", func(dir string) (txnEngine, error) {
		o := TunedPebbleOptions(quietLogger{})
		db, err := pebble.Open(dir, o)
		o.Cache.Unref()
		if err != nil {
			return nil, err
		}
		return &pebbleTxnEngine{db: db}, nil
	}},
}

func openHeapTxn(dir string, ser bool) (txnEngine, error) {
	db, err := heapkv.Open(dir, &heapkv.Options{Logger: quietSlog})
	if err != nil {
		return nil, err
	}
	return &heapTxnEngine{db: db, ser: ser}, nil
}

// BenchmarkTxnCommit sweeps writers x conflict x durability x engine.
func BenchmarkTxnCommit(b *testing.B) {
	for _, writers := range []int{1, 64} {
		for _, conflict := range []string{"low", "high"} {
			for _, sync := range []bool{false, true} {
				name := fmt.Sprintf("writers=%d/conflict=%s/sync=%t", writers, conflict, sync)
				b.Run(name, func(b *testing.B) {
					for _, eng := range txnEngines {
						if !wantEngine(eng.name) {
							continue
						}
						b.Run("engine="+eng.name, func(b *testing.B) {
							benchTxnCommit(b, eng.open, writers, conflict == "high", sync)
						})
					}
				})
			}
		}
	}
}

func benchTxnCommit(b *testing.B, open func(string) (txnEngine, error), writers int, high, sync bool) {
	dir, err := TempDir(*flagDir, "txn")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	e, err := open(dir)
	if err != nil {
		b.Fatal(err)
	}
	nkeys := 100_000
	if high {
		nkeys = 8
	}
	if err := e.load(nkeys); err != nil {
		b.Fatal(err)
	}
	var conflicts atomic.Int64
	b.ResetTimer()
	start := time.Now()
	err = runParallel(b.N, writers, func(i uint64, _ []byte) error {
		rng := rand.New(rand.NewPCG(i, 1))
		x := rng.IntN(nkeys)
		y := (x + 1 + rng.IntN(nkeys-1)) % nkeys
		ka, kb := Key(make([]byte, KeySize), uint64(x)), Key(make([]byte, KeySize), uint64(y))
		for {
			err := e.transfer(ka, kb, i+1, sync)
			if !errors.Is(err, heapkv.ErrConflict) {
				return err
			}
			conflicts.Add(1)
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(conflicts.Load())/float64(b.N), "retries/op")
	if err := e.close(); err != nil {
		b.Fatal(err)
	}
}

// ---- scans ----

type scanEngine interface {
	// scan reads n keys (0: all) and their values from the first key at or
	// after start (nil: the first key); it returns the value bytes read.
	scan(start []byte, n int) (int64, error)
	close() error
}

// The scan engines copy each value into sink, as a consumer would at least
// do: Pebble hands out slices of its cached blocks, and a scan that never
// touched them would measure nothing but iteration.
type heapScanEngine struct {
	db   *heapkv.DB
	sink [16384]byte
}

func (e *heapScanEngine) scan(start []byte, n int) (int64, error) {
	it, err := e.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	var total int64
	i := 0
	for ok := it.SeekGE(start); ok && (n == 0 || i < n); ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			it.Close()
			return 0, err
		}
		total += int64(copy(e.sink[:], v))
		i++
	}
	return total, it.Close()
}

func (e *heapScanEngine) close() error { return e.db.Close() }

type pebbleScanEngine struct {
	db   *pebble.DB
	sink [16384]byte
}

func (e *pebbleScanEngine) scan(start []byte, n int) (int64, error) {
	it, err := e.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	var total int64
	i := 0
	for ok := it.SeekGE(start); ok && (n == 0 || i < n); ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return 0, err
		}
		total += int64(copy(e.sink[:], v))
		i++
	}
	return total, it.Close()
}

func (e *pebbleScanEngine) close() error { return e.db.Close() }

var scanEngines = []struct {
	name string
	load func(dir string, n, size int) (scanEngine, error)
}{
	{"heapkv", loadHeapScan},
	{"pebble-tuned", func(dir string, n, size int) (scanEngine, error) {
		return loadPebbleScan(dir, n, size, TunedPebbleOptions(quietLogger{}))
	}},
	{"pebble-vsep", func(dir string, n, size int) (scanEngine, error) {
		return loadPebbleScan(dir, n, size, ValueSepPebbleOptions(quietLogger{}))
	}},
}

func loadHeapScan(dir string, n, size int) (scanEngine, error) {
	// The index gets the block cache pebble-tuned has (1 GiB).
	db, err := heapkv.Open(dir, &heapkv.Options{NoSync: true, IndexCacheSize: 1 << 30, Logger: quietSlog})
	if err != nil {
		return nil, err
	}
	err = runParallel(n, 8, func(i uint64, kbuf []byte) error {
		return db.Put(Key(kbuf, i), Value(i, 0, size))
	})
	if err == nil {
		err = db.Checkpoint()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	time.Sleep(2 * time.Second) // let the index's compactions run (no API to wait)
	return &heapScanEngine{db: db}, nil
}

func loadPebbleScan(dir string, n, size int, o *pebble.Options) (scanEngine, error) {
	db, err := pebble.Open(dir, o)
	o.Cache.Unref()
	if err != nil {
		return nil, err
	}
	err = runParallel(n, 8, func(i uint64, kbuf []byte) error {
		return db.Set(Key(kbuf, i), Value(i, 0, size), pebble.NoSync)
	})
	if err == nil {
		err = db.Flush()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	(&pebbleEngine{db: db}).Settle(*flagSettle)
	return &pebbleScanEngine{db: db}, nil
}

// BenchmarkScan sweeps value size x scan kind x engine.
func BenchmarkScan(b *testing.B) {
	for _, size := range []int{1024, 16384} {
		for _, kind := range []string{"full", "range100"} {
			b.Run(fmt.Sprintf("value=%d/scan=%s", size, kind), func(b *testing.B) {
				for _, eng := range scanEngines {
					if !wantEngine(eng.name) {
						continue
					}
					b.Run("engine="+eng.name, func(b *testing.B) { benchScan(b, eng.name, eng.load, size, kind) })
				}
			})
		}
	}
}

func benchScan(b *testing.B, name string, load func(string, int, int) (scanEngine, error), size int, kind string) {
	n := int(*flagScanBytes / int64(size))
	dir, err := TempDir(*flagDir, "scan")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	Value(0, 0, 1)
	e, err := load(dir, n, size)
	if err != nil {
		b.Fatal(err)
	}
	defer e.close()
	if _, err := e.scan(nil, 0); err != nil { // warm the caches
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	start := make([]byte, KeySize)
	var bytes, keys int64
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		var got int64
		if kind == "full" {
			got, err = e.scan(nil, 0)
		} else {
			binary.BigEndian.PutUint64(start, rng.Uint64())
			got, err = e.scan(start[:8], 100)
		}
		if err != nil {
			b.Fatal(err)
		}
		bytes += got
		keys += got / int64(size)
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(bytes)/elapsed.Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(keys)/elapsed.Seconds(), "keys/s")
}
