package heapkv

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestLogTailDamage (issue 11, item 5): damage to the tail of the newest
// log segment must never roll back acknowledged, synced writes in silence.
// A database takes only synced writes (Puts of inline and heap values,
// overwrites, Deletes, batches); the crash keeps exactly the synced data,
// which is all of it. Then, at offsets all over the newest log segment
// (its header included; every 1 to 4 bytes), a copy of that state has the
// segment truncated there, zeroed from there to the end, or zeroed for 16
// bytes there, and is reopened. Each copy must either refuse to open with
// ErrCorrupt or read back exactly what the last acknowledged writes left.
// Older versions of overwritten keys coming back, deleted keys reappearing
// or new keys missing are failures.
func TestLogTailDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 5))
	mem := vfs.NewCrashableMem()
	opts := logTailOptions(mem)
	db := openTestDB(t, "db", &opts)
	want := map[string][]byte{}
	var keys []string
	// Writes before a checkpoint live in the index; the ones after it (the
	// newest log segment) overwrite and delete many of them.
	logTailWrites(t, db, rng, want, &keys, 25)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	logTailWrites(t, db, rng, want, &keys, 30)
	// The sync mark covers the newest synced records only once it is
	// updated (under load it lags by at most markInterval; Sync brings it
	// up to date).
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	// The crash: no Close (which would checkpoint and empty the log). Every
	// write was synced, so the clone holds all of them.
	base := mem.CrashClone(vfs.CrashCloneCfg{})
	db.Close()

	seg := logTailNewestSegment(t, base)
	// Segments are preallocated: damage the bytes written, up to the end
	// of the last record (the rest of the file is zeros).
	data := logTailRead(t, base, seg)
	size := len(bytes.TrimRight(data, "\x00"))
	if size < 1000 {
		t.Fatalf("newest log segment %s has only %d bytes; the workload did not reach it", seg, size)
	}
	var ok, corrupt, rolledBack int
	var failures []string
	examples := map[string]string{} // the first ErrCorrupt of each kind
	// Past the last record, up to 64 bytes of the zero tail are damaged too:
	// that must change nothing.
	stride := 4
	if raceEnabled {
		stride = 16 // each copy is reopened: many times slower under the race detector
	}
	for off := 0; off <= size+64; off += 1 + rng.IntN(stride) {
		for _, kind := range []string{"truncate", "zero to end", "zero 16 bytes"} {
			fs := base.CrashClone(vfs.CrashCloneCfg{})
			logTailDamage(t, fs, seg, kind, off)
			got, err := logTailReopen(fs, keys)
			switch {
			case errors.Is(err, ErrCorrupt):
				corrupt++
				if _, ok := examples[kind]; !ok && off > 100 {
					examples[kind] = fmt.Sprintf("at %d: %v", off, err)
				}
			case err != nil:
				failures = append(failures, fmt.Sprintf("%s at %d: open: %v", kind, off, err))
			case !maps.EqualFunc(got, want, bytes.Equal):
				rolledBack++
				failures = append(failures, fmt.Sprintf("%s at %d: opened without error but %s", kind, off, logTailDiff(got, want)))
			default:
				ok++
			}
		}
	}
	t.Logf("segment %s, %d bytes: %d copies intact, %d refused with ErrCorrupt, %d silently rolled back, %d other failures",
		seg, size, ok, corrupt, rolledBack, len(failures)-rolledBack)
	for kind, e := range examples {
		t.Logf("%s %s", kind, e)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d damaged copies failed (%d silent rollbacks); first ones:\n%s",
			len(failures), ok+corrupt+len(failures), rolledBack, logTailSample(failures, 12))
	}
	if corrupt == 0 || ok == 0 {
		t.Fatalf("%d intact, %d corrupt: the damage did not exercise both outcomes", ok, corrupt)
	}
}

// logTailWrites does n synced writes of random kinds on 12 keys and keeps
// want (the acknowledged state) and keys (every key used) up to date.
func logTailWrites(t *testing.T, db *DB, rng *rand.Rand, want map[string][]byte, keys *[]string, n int) {
	t.Helper()
	key := func() string {
		k := fmt.Sprintf("k%02d", rng.IntN(12))
		if !slices.Contains(*keys, k) {
			*keys = append(*keys, k)
		}
		return k
	}
	for range n {
		k := key()
		switch r := rng.IntN(10); {
		case r < 2:
			if err := db.Delete([]byte(k)); err != nil {
				t.Fatal(err)
			}
			delete(want, k)
		case r < 4:
			// A batch: a heap value and an inline one for another key.
			k2 := key()
			v, v2 := logTailValue(rng, 200), logTailValue(rng, 20)
			b := db.NewBatch()
			b.Put([]byte(k), v)
			b.Put([]byte(k2), v2)
			if err := db.Apply(b, &WriteOptions{Sync: true}); err != nil {
				t.Fatal(err)
			}
			want[k], want[k2] = v, v2
		default:
			v := logTailValue(rng, []int{10, 40, 300}[rng.IntN(3)])
			if err := db.Put([]byte(k), v); err != nil { // synced by default
				t.Fatal(err)
			}
			want[k] = v
		}
	}
}

func logTailOptions(fs vfs.FS) Options {
	return Options{
		BlockSize:          512,
		SegmentSize:        64 * 512,
		IndexMemTableSize:  1 << 20,
		InlineThreshold:    64,
		CheckpointLogBytes: -1, // no background checkpoint empties the log
		LogSegmentSize:     64 << 10,
		ValueCacheSize:     -1,
		Logger:             slog.New(slog.DiscardHandler),
		fs:                 fs,
	}
}

func logTailValue(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// logTailNewestSegment returns the path of the newest log segment.
func logTailNewestSegment(t *testing.T, fs vfs.FS) string {
	t.Helper()
	segs := walFiles(t, fs, "db", ".log")
	if len(segs) == 0 {
		t.Fatal("no log segment in db/" + walDirName)
	}
	return "db/" + walDirName + "/" + segs[len(segs)-1]
}

func logTailRead(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	b, err := readFile(fs, path, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logTailDamage rewrites path on fs (durably) with the damage applied.
func logTailDamage(t *testing.T, fs vfs.FS, path, kind string, off int) {
	t.Helper()
	b := logTailRead(t, fs, path)
	switch kind {
	case "truncate":
		b = b[:off]
	case "zero to end":
		clear(b[off:])
	case "zero 16 bytes":
		clear(b[off:min(off+16, len(b))])
	}
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// logTailReopen opens the database on fs and reads every key.
func logTailReopen(fs vfs.FS, keys []string) (map[string][]byte, error) {
	opts := logTailOptions(fs)
	db, err := Open("db", &opts)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	got := map[string][]byte{}
	for _, k := range keys {
		v, err := db.Get([]byte(k))
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("get %s: %w", k, err)
		default:
			got[k] = v
		}
	}
	return got, nil
}

// logTailSample joins up to n of the lines, spread evenly.
func logTailSample(lines []string, n int) string {
	var out []string
	for i := 0; i < n && i < len(lines); i++ {
		out = append(out, lines[i*len(lines)/min(n, len(lines))])
	}
	return strings.Join(out, "\n")
}

// logTailDiff names the keys whose values differ.
func logTailDiff(got, want map[string][]byte) string {
	all := maps.Clone(want)
	maps.Copy(all, got)
	var d []string
	for _, k := range slices.Sorted(maps.Keys(all)) {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !wok:
			d = append(d, k+" was deleted but reappeared")
		case !gok:
			d = append(d, k+" is missing")
		case !bytes.Equal(g, w):
			d = append(d, k+" has another (older) value")
		}
	}
	return strings.Join(d, ", ")
}
