package heapkv_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

// The bank: goroutines move money between accounts in serializable
// transactions (retrying on ErrConflict) while read-only transactions sum
// every balance, through Get and through an iterator, and must always find
// the same total and no negative balance. Crash clones of the file system
// taken while the transfers run (keeping a random share of unsynced data)
// must reopen to the same total: a transfer is one log record, all or
// nothing.

const (
	bankAccounts = 24
	bankInitial  = 1000
	bankTotal    = bankAccounts * bankInitial
)

func bankKey(i int) []byte { return fmt.Appendf(nil, "acct/%02d", i) }

// bankValue encodes a balance; accounts with an odd number carry padding
// that puts the value in the heap.
func bankValue(i int, balance int64, rng *rand.Rand) []byte {
	n := 8
	if i%2 == 1 {
		n += 100 + rng.IntN(1500)
	}
	b := make([]byte, n)
	binary.LittleEndian.PutUint64(b, uint64(balance))
	for j := 8; j < n; j++ {
		b[j] = byte(j * i)
	}
	return b
}

func bankBalance(v []byte) (int64, error) {
	if len(v) < 8 {
		return 0, fmt.Errorf("balance of %d bytes", len(v))
	}
	return int64(binary.LittleEndian.Uint64(v)), nil
}

// bankAudit sums the balances in a read-only transaction, by Get and by
// Scan, and checks the invariants.
func bankAudit(db *heapkv.DB) error {
	return db.View(func(txn *heapkv.Txn) error {
		var byGet, byScan int64
		for i := range bankAccounts {
			v, err := txn.Get(bankKey(i))
			if err != nil {
				return err
			}
			b, err := bankBalance(v)
			if err != nil {
				return err
			}
			if b < 0 {
				return fmt.Errorf("account %d has balance %d", i, b)
			}
			byGet += b
		}
		var err error
		n := 0
		for _, v := range txn.Scan([]byte("acct/"), &err) {
			b, berr := bankBalance(v)
			if berr != nil {
				return berr
			}
			byScan += b
			n++
		}
		if err != nil {
			return err
		}
		if byGet != bankTotal || byScan != bankTotal || n != bankAccounts {
			return fmt.Errorf("total %d by Get, %d by Scan over %d accounts; want %d over %d", byGet, byScan, n, bankTotal, bankAccounts)
		}
		return nil
	})
}

// transfer moves a random amount between two random accounts, found with
// an iterator (a range read) for one of them.
func transfer(db *heapkv.DB, rng *rand.Rand, sync bool) error {
	from, to := rng.IntN(bankAccounts), rng.IntN(bankAccounts-1)
	if to >= from {
		to++
	}
	amount := int64(1 + rng.IntN(200))
	opts := &heapkv.TxnOptions{Serializable: true, WriteOptions: &heapkv.WriteOptions{Sync: sync}}
	return db.UpdateTxn(opts, func(txn *heapkv.Txn) error {
		it, err := txn.NewIter(&heapkv.IterOptions{LowerBound: bankKey(from)})
		if err != nil {
			return err
		}
		defer it.Close()
		if !it.First() {
			return fmt.Errorf("account %d missing: %v", from, it.Error())
		}
		fv, err := it.Value()
		if err != nil {
			return err
		}
		fb, err := bankBalance(fv)
		if err != nil {
			return err
		}
		tv, err := txn.Get(bankKey(to))
		if err != nil {
			return err
		}
		tb, err := bankBalance(tv)
		if err != nil {
			return err
		}
		if fb < amount {
			return nil // nothing to move: commits no writes
		}
		if err := txn.Put(bankKey(from), bankValue(from, fb-amount, rng)); err != nil {
			return err
		}
		return txn.Put(bankKey(to), bankValue(to, tb+amount, rng))
	})
}

func TestBankTransfers(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts := &heapkv.Options{
		BlockSize:          512,
		SegmentSize:        64 * 512,
		InlineThreshold:    64,
		NoSync:             true,
		NoSyncFlushBytes:   64 << 10,
		LogSegmentSize:     64 << 10,
		CheckpointLogBytes: 256 << 10,
		Logger:             txnLogger,
	}
	heapkv.SetFS(opts, mem)
	db := openTestDB(t, "bank", opts)
	rng := rand.New(rand.NewPCG(1, 1))
	b := db.NewBatch()
	for i := range bankAccounts {
		b.Put(bankKey(i), bankValue(i, bankInitial, rng))
	}
	if err := db.Apply(b, &heapkv.WriteOptions{Sync: true}); err != nil {
		t.Fatal(err)
	}

	const workers, perWorker = 8, 150
	var (
		wg        sync.WaitGroup
		done      atomic.Int32
		conflicts atomic.Int64
		audits    atomic.Int64
		clonesMu  sync.Mutex
		clones    []*vfs.MemFS
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done.Add(1)
			rng := rand.New(rand.NewPCG(2, uint64(w)))
			for n := 0; n < perWorker; {
				err := transfer(db, rng, rng.IntN(4) == 0)
				switch {
				case errors.Is(err, heapkv.ErrConflict):
					conflicts.Add(1)
					continue
				case err != nil:
					t.Error(err)
					return
				}
				n++
				if w == 0 && n%25 == 0 {
					// A crash now, keeping a random share of unsynced data.
					c := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
					clonesMu.Lock()
					clones = append(clones, c)
					clonesMu.Unlock()
				}
			}
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done.Load() < workers && !t.Failed() {
				if err := bankAudit(db); err != nil {
					t.Error("audit during transfers:", err)
					return
				}
				audits.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := bankAudit(db); err != nil {
		t.Fatal(err)
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d transfers, %d conflicts retried, %d audits; stats: %d txn commits, %d txn conflicts",
		workers*perWorker, conflicts.Load(), audits.Load(), st.TxnCommits, st.TxnConflicts)
	if st.TxnConflicts != conflicts.Load() {
		t.Fatalf("Stats.TxnConflicts = %d, want the %d conflicts retried", st.TxnConflicts, conflicts.Load())
	}
	if st.OpenTxns+st.OpenIterators != 0 {
		t.Fatalf("st.OpenTxns+st.OpenIterators = %v, want 0", st.OpenTxns+st.OpenIterators)
	}
	checkTxnDB(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Every crash state reopens to the same total; so does the clean close.
	clones = append(clones, mem.CrashClone(vfs.CrashCloneCfg{}))
	for i, c := range clones {
		o := *opts
		heapkv.SetFS(&o, c)
		db := openTestDB(t, "bank", &o)
		if err := bankAudit(db); err != nil {
			t.Fatalf("crash clone %d: %v", i, err)
		}
		checkTxnDB(t, db)
		if err := transfer(db, rng, true); err != nil {
			t.Fatalf("crash clone %d: %v", i, err)
		} // still works
		if err := bankAudit(db); err != nil {
			t.Fatalf("crash clone %d: %v", i, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if conflicts.Load() <= int64(0) {
		t.Fatalf("the test should exercise conflicts: conflicts.Load() = %v, want > int64(0) = %v", conflicts.Load(), int64(0))
	}
}
