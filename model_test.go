// Model-based tests: DESIGN "How it is tested" (random operation sequences
// against a map model, with reopens), invariants 5 and 7, and the space
// promise of the heap (freed blocks come back without any GC).
//
//	go test -race -run TestModel -count=1 .
//	go test -run TestModel -count=1 -heapkv.modelsteps=200000 .   (longer)
package heapkv_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

var modelStepsFlag = flag.Int("heapkv.modelsteps", 0,
	"random operations per option set in TestModelRandom (0: 2000, or 500 with -short or -race)")

var modelLogger = slog.New(slog.DiscardHandler)

const modelKeys = 48

func modelKey(i int) string { return fmt.Sprintf("m%03d", i) }

// modelConfig is one option set TestModelRandom runs.
type modelConfig struct {
	name    string
	opts    heapkv.Options
	onDisk  bool // t.TempDir() instead of a MemFS
	stepDiv int  // run steps/stepDiv operations (fsyncs on disk, 16 MiB log segments are slow)
}

func modelConfigs() []modelConfig {
	tiny := heapkv.Options{BlockSize: 128, SegmentSize: 64 * 128, InlineThreshold: 64, Cursors: 2,
		LogSegmentSize: 64 << 10, IndexMemTableSize: 1 << 20, Logger: modelLogger}
	memtables := heapkv.Options{IndexMemTableSize: 1 << 20, InlineThreshold: 8 << 10, LogSegmentSize: 64 << 10,
		CheckpointLogBytes: 512 << 10, Logger: modelLogger}
	// Configurations about values use 1 MiB log segments: every reopen
	// and checkpoint of a default-sized log writes (a spare) and reads 16
	// MiB, which under the race detector is most of the test's time.
	const logSeg = 1 << 20
	inlineAll := heapkv.Options{InlineThreshold: heapkv.MaxValueSize, IndexMemTableSize: 1 << 20,
		LogSegmentSize: logSeg, Logger: modelLogger}
	// heapEverything's entry cache is tiny (rings of 168 bytes), so that
	// its records are evicted and given second chances all the time.
	heapAll := heapkv.Options{InlineThreshold: -1, BlockSize: 512, SegmentSize: 256 * 512,
		LogSegmentSize: logSeg, EntryCacheSize: 16 << 10, Logger: modelLogger}
	compressed := heapkv.Options{InlineThreshold: -1, BlockSize: 128, SegmentSize: 256 * 128,
		Compression: heapkv.CodecS2, ValueCacheSize: -1, LogSegmentSize: logSeg, Logger: modelLogger}
	// The geometry of databases made before 128-byte blocks: 4 KiB blocks
	// (written whole, zero-padded) and 2 KiB inline values.
	pageBlocks := heapkv.Options{BlockSize: 4096, SegmentSize: 64 * 4096, InlineThreshold: 2048,
		LogSegmentSize: logSeg, Logger: modelLogger}
	return []modelConfig{
		{name: "tinySegments", opts: tiny},
		{name: "tinyMemtables", opts: memtables},
		{name: "inlineEverything", opts: inlineAll},
		{name: "heapEverything", opts: heapAll},
		{name: "compressedNoCache", opts: compressed},
		{name: "pageBlocks", opts: pageBlocks},
		{name: "default", opts: heapkv.Options{Logger: modelLogger}, stepDiv: 4},
		{name: "tinySegmentsOnDisk", opts: tiny, onDisk: true, stepDiv: 4},
	}
}

// modelValue returns n bytes: random, or (half the time) a short random
// pattern repeated, which compresses.
func modelValue(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	if rng.IntN(2) == 0 {
		for i := 0; i < n; i += 8 {
			v := rng.Uint64()
			for j := i; j < min(i+8, n); j++ {
				b[j] = byte(v)
				v >>= 8
			}
		}
		return b
	}
	pat := make([]byte, 1+rng.IntN(16))
	for i := range pat {
		pat[i] = byte(rng.Uint32())
	}
	for i := range b {
		b[i] = pat[i%len(pat)]
	}
	if n > 0 {
		b[rng.IntN(n)] ^= 0x5a // no two values alike
	}
	return b
}

// modelSize draws a value size: empty, small, up to three blocks, a few
// more blocks, and now and then a few hundred KiB.
func modelSize(rng *rand.Rand, blockSize int) int {
	switch r := rng.IntN(1000); {
	case r < 50:
		return 0
	case r < 250:
		return 1 + rng.IntN(64)
	case r < 940:
		return rng.IntN(3*blockSize + 1)
	case r < 995:
		return 3*blockSize + rng.IntN(8*blockSize)
	default:
		return 100<<10 + rng.IntN(300<<10)
	}
}

// modelDB is a database under test and its model.
type modelDB struct {
	t     *testing.T
	name  string
	dir   string
	opts  heapkv.Options
	db    *heapkv.DB
	model map[string][]byte
	keys  []string // every key the test may touch
}

func (m *modelDB) open() {
	m.t.Helper()
	db := openTestDB(m.t, m.dir, &m.opts)
	m.db = db
}

func (m *modelDB) reopen() {
	m.t.Helper()
	if err := m.db.Close(); err != nil {
		m.t.Fatalf("%s: close: %v", m.name, err)
	}
	m.open()
	m.verifyAll("after reopen")
}

// get compares one key with the model.
func (m *modelDB) get(db interface {
	Get([]byte) ([]byte, error)
}, model map[string][]byte, k, when string) {
	m.t.Helper()
	got, err := db.Get([]byte(k))
	want, ok := model[k]
	switch {
	case !ok && !errors.Is(err, heapkv.ErrNotFound):
		m.t.Fatalf("%s %s: Get(%q) = %d bytes, %v; want ErrNotFound", m.name, when, k, len(got), err)
	case ok && err != nil:
		m.t.Fatalf("%s %s: Get(%q): %v; want %d bytes", m.name, when, k, err, len(want))
	case ok && !bytes.Equal(got, want):
		m.t.Fatalf("%s %s: Get(%q) = %d bytes, want %d bytes (contents differ)", m.name, when, k, len(got), len(want))
	}
	if d, isDB := db.(*heapkv.DB); isDB {
		m.viewValue(d, k, want, ok, when)
	}
}

// viewValue compares ViewValue of one key with the model.
func (m *modelDB) viewValue(db *heapkv.DB, k string, want []byte, ok bool, when string) {
	m.t.Helper()
	var got []byte
	calls := 0
	err := db.ViewValue([]byte(k), func(v []byte) error {
		calls++
		got = bytes.Clone(v)
		return nil
	})
	switch {
	case !ok && (!errors.Is(err, heapkv.ErrNotFound) || calls != 0):
		m.t.Fatalf("%s %s: ViewValue(%q): %d calls, %v; want ErrNotFound and no call", m.name, when, k, calls, err)
	case ok && (err != nil || calls != 1):
		m.t.Fatalf("%s %s: ViewValue(%q): %d calls, %v; want one call with %d bytes", m.name, when, k, calls, err, len(want))
	case ok && !bytes.Equal(got, want):
		m.t.Fatalf("%s %s: ViewValue(%q) = %d bytes, want %d bytes (contents differ)", m.name, when, k, len(got), len(want))
	}
}

// scan compares a full Scan with the model.
func (m *modelDB) scan(when string) {
	m.t.Helper()
	var err error
	var keys []string
	for k, v := range m.db.Scan(nil, &err) {
		keys = append(keys, string(k))
		if want, ok := m.model[string(k)]; !ok || !bytes.Equal(v, want) {
			m.t.Fatalf("%s %s: Scan yields %q (%d bytes); model has %v, %d bytes", m.name, when, k, len(v), ok, len(want))
		}
	}
	if err != nil {
		m.t.Fatalf("%s %s: Scan: %v", m.name, when, err)
	}
	if want := slices.Sorted(maps.Keys(m.model)); !slices.Equal(keys, want) {
		m.t.Fatalf("%s %s: Scan yields %d keys, model has %d", m.name, when, len(keys), len(want))
	}
}

// verifyAll compares every key, scans, and checks the allocation invariant
// and the counters.
func (m *modelDB) verifyAll(when string) {
	m.t.Helper()
	for _, k := range m.keys {
		m.get(m.db, m.model, k, when)
	}
	m.scan(when)
	rep, err := m.db.Check(context.Background())
	if err != nil {
		m.t.Fatalf("%s %s: Check: %v\n%v", m.name, when, err, rep)
	}
	if rep.Keys != int64(len(m.model)) {
		m.t.Fatalf("%s %s: Check counts %d keys, model has %d", m.name, when, rep.Keys, len(m.model))
	}
	st, err := m.db.Stats()
	if err != nil {
		m.t.Fatalf("%s %s: Stats: %v", m.name, when, err)
	}
	if st.Keys != int64(len(m.model)) {
		m.t.Fatalf("%s %s: Stats().Keys = %d, model has %d", m.name, when, st.Keys, len(m.model))
	}
}

// modelSnap is an open snapshot and the model as of it.
type modelSnap struct {
	s     *heapkv.Snapshot
	model map[string][]byte
}

func TestModelRandom(t *testing.T) {
	steps := *modelStepsFlag
	if steps <= 0 {
		steps = 2000
		if testing.Short() || heapkv.RaceEnabled {
			steps = 500
		}
	}
	for i, c := range modelConfigs() {
		t.Run(c.name, func(t *testing.T) {
			n := steps
			if c.stepDiv > 0 {
				n /= c.stepDiv
			}
			runModel(t, c, uint64(i)+1, n)
		})
	}
}

func runModel(t *testing.T, c modelConfig, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 0x6d6f64656c))
	m := &modelDB{t: t, name: c.name, dir: "db", opts: c.opts, model: map[string][]byte{}}
	heapkv.CrossCheckKeyFilter(&m.opts)
	heapkv.CrossCheckEntryCache(&m.opts)
	if c.onDisk {
		m.dir = t.TempDir()
	} else {
		heapkv.SetFS(&m.opts, vfs.NewMem())
	}
	for i := range modelKeys {
		m.keys = append(m.keys, modelKey(i))
	}
	blockSize := c.opts.BlockSize
	if blockSize == 0 {
		blockSize = heapkv.DefaultBlockSize
	}
	m.open()
	defer func() {
		if m.db != nil {
			m.db.Close()
		}
	}()
	var snap *modelSnap
	closeSnap := func() {
		if snap != nil {
			if err := snap.s.Close(); err != nil {
				t.Fatalf("snapshot close: %v", err)
			}
			snap = nil
		}
	}
	var reopens, checkpoints, batches, snapReads int
	for i := range steps {
		key := m.keys[rng.IntN(len(m.keys))]
		when := fmt.Sprintf("step %d", i)
		switch r := rng.IntN(1000); {
		case r < 330: // Put, synced or not
			v := modelValue(rng, modelSize(rng, blockSize))
			var err error
			if rng.IntN(4) == 0 {
				b := m.db.NewBatch()
				b.Put([]byte(key), v)
				err = m.db.Apply(b, &heapkv.WriteOptions{Sync: false})
			} else {
				err = m.db.Put([]byte(key), v)
			}
			if err != nil {
				t.Fatalf("%s: Put(%q, %d bytes): %v", when, key, len(v), err)
			}
			m.model[key] = v
		case r < 430: // Delete (the key may be absent)
			if err := m.db.Delete([]byte(key)); err != nil {
				t.Fatalf("%s: Delete(%q): %v", when, key, err)
			}
			delete(m.model, key)
		case r < 700: // Get and compare
			m.get(m.db, m.model, key, when)
		case r < 800: // batch of several ops, some on the same key
			b := m.db.NewBatch()
			next := maps.Clone(m.model)
			for j := range 2 + rng.IntN(7) {
				k := m.keys[rng.IntN(len(m.keys))]
				if j > 0 && rng.IntN(3) == 0 {
					k = key
				}
				key = k
				if rng.IntN(4) == 0 {
					b.Delete([]byte(k))
					delete(next, k)
				} else {
					v := modelValue(rng, modelSize(rng, blockSize))
					b.Put([]byte(k), v)
					next[k] = v
				}
			}
			if err := m.db.Apply(b, &heapkv.WriteOptions{Sync: rng.IntN(3) > 0}); err != nil {
				t.Fatalf("%s: Apply(%d ops): %v", when, b.Len(), err)
			}
			m.model = next
			batches++
		case r < 830: // Sync
			if err := m.db.Sync(); err != nil {
				t.Fatalf("%s: Sync: %v", when, err)
			}
		case r < 850: // Checkpoint
			if err := m.db.Checkpoint(); err != nil {
				t.Fatalf("%s: Checkpoint: %v", when, err)
			}
			checkpoints++
		case r < 870: // take or drop a snapshot
			closeSnap()
			if rng.IntN(2) == 0 {
				s, err := m.db.NewSnapshot()
				if err != nil {
					t.Fatalf("%s: NewSnapshot: %v", when, err)
				}
				snap = &modelSnap{s: s, model: maps.Clone(m.model)}
			}
		case r < 960: // read through the snapshot: old values stay intact
			if snap != nil {
				m.get(snap.s, snap.model, key, when+" (snapshot)")
				snapReads++
			}
		case r < 975: // full scan
			m.scan(when)
		case r < 985: // Check without reopening
			m.verifyAll(when)
		default: // Close and reopen
			closeSnap()
			m.reopen()
			reopens++
		}
	}
	closeSnap()
	m.verifyAll("at the end")
	m.reopen()
	if err := m.db.Close(); err != nil {
		t.Fatalf("final close: %v", err)
	}
	m.db = nil
	t.Logf("%s: %d steps, %d keys at the end, %d batches, %d checkpoints, %d reopens, %d snapshot reads",
		c.name, steps, len(m.model), batches, checkpoints, reopens, snapReads)
}

// NoSyncFlushBytes (set to 2 MiB here) per sync window; allowed: three
// windows (a window's frees come back once a later record vouches for it),
// where frees that waited for the 1 s background sync would let the file
// grow to six times the live data.
func TestModelOverwriteSpace(t *testing.T) {
	t.Run("synced", func(t *testing.T) { modelOverwriteSpace(t, false) })
	t.Run("noSync", func(t *testing.T) { modelOverwriteSpace(t, true) })
}

func modelOverwriteSpace(t *testing.T, noSync bool) {
	const (
		blockSize = 4096
		segBlocks = 64
		cursors   = 4
		rounds    = 6 // the first write and five overwrites
	)
	n := 400
	if testing.Short() {
		n = 150
	}
	const noSyncFlush = 2 << 20
	opts := heapkv.Options{BlockSize: blockSize, SegmentSize: segBlocks * blockSize, InlineThreshold: -1,
		Cursors: cursors, NoSyncFlushBytes: noSyncFlush, Logger: modelLogger}
	heapkv.SetFS(&opts, vfs.NewMem())
	db := openTestDB(t, "db", &opts)
	rng := rand.New(rand.NewPCG(3, 4))
	model := map[string][]byte{}
	var written int64
	for range rounds {
		for i := range n {
			k := fmt.Sprintf("v%04d", i)
			v := modelValue(rng, 1+rng.IntN(4*blockSize)) // 1..4 blocks
			var err error
			if noSync {
				b := db.NewBatch()
				b.Put([]byte(k), v)
				err = db.Apply(b, &heapkv.WriteOptions{Sync: false})
			} else {
				err = db.Put([]byte(k), v)
			}
			if err != nil {
				t.Fatal(err)
			}
			model[k] = v
			written += int64((len(v) + blockSize - 1) / blockSize * blockSize)
		}
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	var live int64
	for _, v := range model {
		live += int64((len(v) + blockSize - 1) / blockSize * blockSize)
	}
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Failed != "" {
		t.Fatalf("database failed: %s", st.Failed)
	}
	seg := int64(segBlocks * blockSize)
	bound := live*13/10 + (cursors+2)*seg
	t.Logf("written %d KiB in %d rounds, live %d KiB, heap allocated %d KiB (pending free %d KiB), heap file %d KiB; bound %d KiB",
		written>>10, rounds, live>>10, st.HeapAllocBytes>>10, st.HeapPendingFree>>10, st.HeapFileBytes>>10, bound>>10)
	if st.HeapAllocBytes > bound {
		t.Errorf("heap holds %d bytes allocated for %d live bytes: more than 1.3x live + %d segments (%d); freed blocks are not coming back",
			st.HeapAllocBytes, live, cursors+2, bound)
	}
	fileBound := bound + blockSize // the header block
	if noSync {
		fileBound += 3 * noSyncFlush
	}
	if st.HeapFileBytes > fileBound {
		t.Errorf("heap file grew to %d bytes for %d live bytes (bound %d): freed blocks came back too late", st.HeapFileBytes, live, fileBound)
	}
	if st.HeapLiveBytes != live {
		t.Errorf("Stats().HeapLiveBytes = %d, the live values occupy %d bytes", st.HeapLiveBytes, live)
	}
	rep, err := db.Check(context.Background())
	if err != nil {
		t.Fatalf("Check: %v\n%v", err, rep)
	}
	if rep.Keys != int64(len(model)) || rep.ReferencedBlocks*blockSize != live {
		t.Errorf("Check: %d keys, %d referenced blocks; want %d keys, %d blocks", rep.Keys, rep.ReferencedBlocks, len(model), live/blockSize)
	}
	for k, want := range model {
		got, err := db.Get([]byte(k))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get(%q) = %d bytes, %v; want %d bytes", k, len(got), err, len(want))
		}
	}
}
