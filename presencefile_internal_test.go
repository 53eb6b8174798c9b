package heapkv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// presenceTestOptions: heap and inline values, no background checkpoint
// (a crash clone never races a checkpoint's file links), every lookup the
// filter skips cross-checked against the index.
func presenceTestOptions(fs vfs.FS) *Options {
	o := &Options{CheckpointLogBytes: -1, InlineThreshold: 64}
	SetFS(o, fs)
	o.crossCheckPresence = true
	return o
}

// presenceValue is key i's value in round r: inline or heap, by i.
func presenceValue(i, r int) []byte {
	return bytes.Repeat([]byte{byte(i + r)}, 10+(i%3)*100)
}

// writePresenceKeys puts keys [from, to) with round r's values and waits
// until the filter is ready.
func writePresenceKeys(t *testing.T, db *DB, from, to, r int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := db.Put(fmt.Appendf(nil, "k%06d", i), presenceValue(i, r)); err != nil {
			t.Fatal(err)
		}
	}
	db.scanPresenceOnce()
	for deadline := time.Now().Add(30 * time.Second); !db.presence.ready.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the key filter was not ready 30s after the writes")
		}
	}
}

// keysFiles lists the saved filters in dir.
func keysFiles(t *testing.T, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, keysPrefix) {
			out = append(out, n)
		}
	}
	return out
}

// savedFilter returns the name and path of the one saved filter in dir.
func savedFilter(t *testing.T, fs vfs.FS, dir string) (name, path string) {
	t.Helper()
	names := keysFiles(t, fs, dir)
	if len(names) != 1 {
		t.Fatalf("saved filters %v, want one", names)
	}
	return names[0], fs.PathJoin(dir, names[0])
}

// TestKeyFilterSavedByClose: Close saves the filter, a clean reopen uses it
// (ready before any write, no scan of the keys), and writes through it stay
// exact: overwrites of saved keys look up and free (the cross-check and
// Check at cleanup would see a skipped lookup of a present key, or a
// leaked block), new keys skip. The next checkpoint deletes the file.
func TestKeyFilterSavedByClose(t *testing.T) {
	mem := vfs.NewMem()
	db := openTestDB(t, "db", presenceTestOptions(mem))
	writePresenceKeys(t, db, 0, 2000, 0)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	savedFilter(t, mem, "db")

	db = openTestDB(t, "db", presenceTestOptions(mem))
	if !db.presence.loaded || !db.presence.ready.Load() {
		t.Fatalf("clean reopen: filter loaded %v, ready %v; want both", db.presence.loaded, db.presence.ready.Load())
	}
	skipped := db.presence.skipped.Load()
	writePresenceKeys(t, db, 1000, 3000, 1) // 1,000 overwrites, 1,000 new keys
	if got := db.presence.skipped.Load() - skipped; got < 900 || got > 1000 {
		t.Fatalf("%d lookups skipped for 1,000 new and 1,000 saved keys; want about the new ones", got)
	}
	for i := 0; i < 3000; i += 7 {
		if err := db.Delete(fmt.Appendf(nil, "k%06d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if f := keysFiles(t, mem, "db"); len(f) != 0 {
		t.Fatalf("after a checkpoint: saved filters %v, want none", f)
	}
}

// TestKeyFilterNotLoadedAfterACrash: a database that crashed after writing
// keys the saved filter does not hold rebuilds the filter; the writes
// after the reopen then find every key (the cross-check fails a write
// whose present key the filter rules out). A damaged file is ignored.
func TestKeyFilterNotLoadedAfterACrash(t *testing.T) {
	mem := vfs.NewCrashableMem()
	db := openTestDB(t, "db", presenceTestOptions(mem))
	writePresenceKeys(t, db, 0, 1000, 0)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTestDBNoCheck(t, "db", presenceTestOptions(mem))
	if !db.presence.loaded {
		t.Fatal("clean reopen did not load the saved filter")
	}
	writePresenceKeys(t, db, 1000, 2000, 0) // durable: synced writes
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})

	db2 := openTestDB(t, "db", presenceTestOptions(crashed))
	if db2.presence.loaded {
		t.Fatal("reopen after a crash that followed new writes loaded the filter saved before them")
	}
	writePresenceKeys(t, db2, 500, 2000, 2) // overwrites of both sets: each must look up
	if err := db2.Close(); err != nil {
		t.Fatal(err)
	}

	// Damage the saved filter: the next Open ignores it.
	_, path := savedFilter(t, crashed, "db")
	f, err := crashed.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0xff}, 40); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db3 := openTestDB(t, "db", presenceTestOptions(crashed))
	if db3.presence.loaded {
		t.Fatal("a damaged saved filter was loaded")
	}
	writePresenceKeys(t, db3, 0, 2000, 3)
}

// TestKeyFilterOfAnOlderFormatRebuilt: a keys file whose filter has the
// first encoding (a release before blocked generations) is not loaded:
// Open says so at Info level, not as a warning, and the first write's
// scan rebuilds the filter, through which overwrites still look up (the
// cross-check fails a write whose present key the filter rules out).
func TestKeyFilterOfAnOlderFormatRebuilt(t *testing.T) {
	mem := vfs.NewMem()
	db := openTestDB(t, "db", presenceTestOptions(mem))
	writePresenceKeys(t, db, 0, 2000, 0)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	name, path := savedFilter(t, mem, "db")
	data, err := readFile(mem, path, maxStateFileSize)
	if err != nil {
		t.Fatal(err)
	}
	// The same header, a version 1 filter (2,000 keys in one plain
	// generation of 65,536 at 10 bits a key, bits all set) and its CRC.
	old := append([]byte(nil), data[:filehdr.Size]...)
	old = append(old, 1)
	old = binary.AppendUvarint(old, 2000)
	old = binary.AppendUvarint(old, 2000)
	old = binary.AppendUvarint(old, 1)
	old = binary.AppendUvarint(old, 1<<16)
	old = append(old, bytes.Repeat([]byte{0xff}, (1<<16)*10/64*8)...)
	old = binary.LittleEndian.AppendUint32(old, crc32.Checksum(old[filehdr.Size:], crcTable))
	if err := writeFileAtomic(mem, "db", name, old); err != nil {
		t.Fatal(err)
	}

	var logs logRecorder
	o := presenceTestOptions(mem)
	o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	db = openTestDB(t, "db", o)
	if db.presence.loaded {
		t.Fatal("a filter of the older format was loaded")
	}
	if out := logs.text(); !strings.Contains(out, "level=INFO msg=\"the saved key filter has an older format") || strings.Contains(out, "level=WARN") {
		t.Fatalf("Open's log after an older filter: %q; want its Info line and no warning", out)
	}
	writePresenceKeys(t, db, 1000, 3000, 1) // 1,000 overwrites, 1,000 new keys
}

// TestKeyFilterNotSavedWhenMostlyDeleted: a filter that holds more than
// twice the database's keys (plus 64Ki) is not saved, so the next Open
// starts a clean one.
func TestKeyFilterNotSavedWhenMostlyDeleted(t *testing.T) {
	mem := vfs.NewMem()
	o := presenceTestOptions(mem)
	o.crossCheckPresence = false // 140,000 writes: keep it quick
	db := openTestDB(t, "db", o)
	const n = 70_000
	writePresenceKeys(t, db, 0, n, 0)
	for i := range n {
		if err := db.Delete(fmt.Appendf(nil, "k%06d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if f := keysFiles(t, mem, "db"); len(f) != 0 {
		t.Fatalf("saved filters %v for a filter of %d keys over an empty database, want none", f, n)
	}
}

// logRecorder keeps what a text slog handler writes, for any goroutine.
type logRecorder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logRecorder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logRecorder) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
