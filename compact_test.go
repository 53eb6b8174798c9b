package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// Compact's tests. Those that measure file space run on the operating
// system's file system (t.TempDir), where holes and truncation exist; the
// crash test runs on MemFS, where Compact only moves values.

// compactOptions are small segments (64 blocks of 4 KiB), so that a test
// heap of a few megabytes has dozens of them.
func compactOptions() *heapkv.Options {
	return &heapkv.Options{
		BlockSize:          4096,
		SegmentSize:        64 * 4096,
		CheckpointLogBytes: -1,
		IndexCacheSize:     1 << 20,
		IndexMemTableSize:  1 << 20,
		Cursors:            2,
		Logger:             slog.New(slog.DiscardHandler),
	}
}

// compactValue is the gen-th value of key i: 2,000 to 9,000 bytes, so
// values take one to three blocks.
func compactValue(i, gen int) []byte {
	n := 2000 + (i*7919+gen*104729)%7000
	unit := fmt.Appendf(nil, "<%d#%d>", i, gen)
	return bytes.Repeat(unit, n/len(unit)+1)[:n]
}

func compactKey(i int) []byte { return fmt.Appendf(nil, "key%05d", i) }

// fillThenDelete writes n values and deletes all but every tenth; it
// returns the model of what is left.
func fillThenDelete(t *testing.T, db *heapkv.DB, n int) map[string][]byte {
	t.Helper()
	model := map[string][]byte{}
	b := db.NewBatch()
	for i := range n {
		v := compactValue(i, 0)
		b.Put(compactKey(i), v)
		model[string(compactKey(i))] = v
		if b.Len() == 100 {
			mustNoErr(t, db.Apply(b, &heapkv.WriteOptions{}))
			b = db.NewBatch()
		}
	}
	mustNoErr(t, db.Apply(b, &heapkv.WriteOptions{}))
	b = db.NewBatch()
	for i := range n {
		if i%10 != 0 {
			b.Delete(compactKey(i))
			delete(model, string(compactKey(i)))
		}
	}
	mustNoErr(t, db.Apply(b, &heapkv.WriteOptions{Sync: true}))
	return model
}

func mustStats(t *testing.T, db *heapkv.DB) heapkv.Stats {
	t.Helper()
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func checkContents(t *testing.T, db *heapkv.DB, model map[string][]byte) {
	t.Helper()
	got := contents(t, db)
	if len(got) != len(model) {
		t.Fatalf("the database holds %d keys, want %d", len(got), len(model))
	}
	for k, v := range model {
		if got[k] != string(v) {
			t.Fatalf("key %s: %d bytes, want %d", k, len(got[k]), len(v))
		}
	}
	rep, err := db.Check(context.Background())
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v\n%v", err, rep)
	}
}

// TestCompactWithReadersAndWriters runs Compact again and again while
// writers overwrite and delete their own keys and a snapshot taken before
// it all is read: overwrites win over moves, and the snapshot's blocks are
// not given back while it is open.
func TestCompactWithReadersAndWriters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	db := openTestDB(t, dir, compactOptions())
	const n = 2000
	model := fillThenDelete(t, db, n)
	snap, err := db.NewSnapshot()
	mustNoErr(t, err)
	before := map[string][]byte{}
	for k, v := range model {
		before[k] = v
	}

	var mu sync.Mutex
	stop := overwriters(t, db, n, 3, 7, &mu, model, compactValue, 0)
	var moved, conflicts int64
	deadline := time.Now().Add(2 * time.Second)
	for rounds := 0; rounds < 3 || time.Now().Before(deadline); rounds++ {
		res, err := db.Compact(t.Context(), &heapkv.CompactOptions{MaxLive: 0.9})
		if err != nil {
			stop()
			t.Fatal(err)
		}
		moved += res.ValuesMoved
		conflicts += res.Conflicts
	}
	stop()
	t.Logf("moved %d values, %d conflicts", moved, conflicts)
	if moved == 0 {
		t.Fatal("nothing was moved")
	}
	checkContents(t, db, model)
	for k, v := range before {
		got, err := snap.Get([]byte(k))
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("snapshot: get %s: %v (%d bytes, want %d)", k, err, len(got), len(v))
		}
	}
	mustNoErr(t, snap.Close())
	// With the snapshot gone its blocks can be given back.
	_, err = db.Compact(t.Context(), nil)
	mustNoErr(t, err)
	checkContents(t, db, model)
}

func TestCompactOptionsAndReadOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	db := openTestDB(t, dir, compactOptions())
	for _, o := range []heapkv.CompactOptions{{MaxLive: 1.5}, {BytesPerSecond: -1}} {
		if _, err := db.Compact(t.Context(), &o); !errors.Is(err, heapkv.ErrInvalidOptions) {
			t.Fatalf("Compact(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
	fillThenDelete(t, db, 500)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := db.Compact(ctx, &heapkv.CompactOptions{MaxLive: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Compact with a cancelled context = %v", err)
	}
	mustNoErr(t, db.Close())
	o := compactOptions()
	o.ReadOnly = true
	ro := openTestDB(t, dir, o)
	if _, err := ro.Compact(t.Context(), nil); !errors.Is(err, heapkv.ErrReadOnly) {
		t.Fatalf("read-only Compact = %v", err)
	}
}

// TestCompactCrash takes crash clones while Compact moves values (MemFS:
// no holes there) and checks that every clone opens with exactly the
// model's contents.
func TestCompactCrash(t *testing.T) {
	e := newMirrorEnv(t, 2)
	db := e.open()
	for i := range 2000 {
		e.put(db, fmt.Sprintf("k%04d", i))
	}
	for i := range 2000 {
		if i%3 != 0 {
			e.del(db, fmt.Sprintf("k%04d", i))
		}
	}
	mustNoErr(t, db.Sync())
	// Paced, so that the clones fall all through it. A pacer sleeps
	// before a batch for the bytes before it: the move must take more
	// than one batch (compactBatchKeys) of values.
	compactCrashClones(t, e, db, "compaction", &heapkv.CompactOptions{MaxLive: 0.9, BytesPerSecond: 512 << 10},
		func(res heapkv.CompactResult) error {
			if res.ValuesMoved == 0 || !res.Unsupported {
				return fmt.Errorf("compact on MemFS: %+v", res)
			}
			return nil
		})
}

// compactCrashClones takes crash clones of e while db compacts with o
// (checked by check), closes db, and opens every clone to check that it
// holds exactly e's model.
func compactCrashClones(t *testing.T, e *mirrorEnv, db *heapkv.DB, what string, o *heapkv.CompactOptions, check func(heapkv.CompactResult) error) {
	t.Helper()
	// Reopened, the commit path knows nothing of the keys' last writes:
	// what each move frees, and logs, is what it read itself
	// (Txn.commitMoves).
	mustClose(t, db)
	db = e.open()
	var res heapkv.CompactResult
	maxClones := 40
	if heapkv.RaceEnabled {
		maxClones = 12 // each clone is reopened and checked: many times slower under the race detector
	}
	clones := e.clonesDuring(maxClones, 5*time.Millisecond, 3, func() error {
		var err error
		if res, err = db.Compact(t.Context(), o); err == nil {
			err = check(res)
		}
		return err
	})
	t.Logf("%d clones; moved %d values, %d bytes", len(clones), res.ValuesMoved, res.BytesMoved)
	e.checkModel(db)
	mustClose(t, db)
	if len(clones) < 5 {
		t.Fatalf("only %d clones during the %s", len(clones), what)
	}
	for i, mem := range clones {
		o := e.options()
		heapkv.SetFS(o, mem)
		db, err := heapkv.Open(mdbDir, o)
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		checkContents(t, db, e.model)
		mustClose(t, db)
	}
}

// overwriters starts writers goroutines that overwrite keys 0..n-1 with
// value(i, gen) and delete one write in four, each writer its own keys (i
// mod writers), pausing pause between writes, and record in model, under
// mu, what they did. The returned stop ends them and waits.
func overwriters(t *testing.T, db *heapkv.DB, n, writers int, seed uint64, mu *sync.Mutex, model map[string][]byte, value func(i, gen int) []byte, pause time.Duration) (stop func()) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), seed))
			for gen := 1; ; gen++ {
				select {
				case <-done:
					return
				default:
				}
				i := w + writers*rng.IntN(n/writers)
				k := compactKey(i)
				var err error
				var v []byte
				if rng.IntN(4) == 0 {
					err = db.Delete(k)
				} else {
					v = value(i, gen)
					err = db.Put(k, v)
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if v == nil {
					delete(model, string(k))
				} else {
					model[string(k)] = v
				}
				mu.Unlock()
				time.Sleep(pause)
			}
		})
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

// Close during a Compact cancels it rather than waiting it out, and the
// database reopens whole.
func TestCompactStoppedByClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	o := compactOptions()
	db, err := heapkv.Open(dir, o)
	mustNoErr(t, err)
	model := fillThenDelete(t, db, 2000)
	done := make(chan error, 1)
	go func() {
		_, err := db.Compact(context.Background(), &heapkv.CompactOptions{BytesPerSecond: 64 << 10})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		mustNoErr(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close waited for the paced Compact (or deadlocked with it)")
	}
	if err := <-done; err == nil {
		t.Fatal("a Compact cut short by Close returned no error")
	}
	db = openTestDB(t, dir, o)
	checkContents(t, db, model)
}
