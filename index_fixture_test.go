package heapkv_test

// The database the index damage tests damage copies of, and how it is
// carried to the child processes (as a directory tree on disk).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

const (
	damageDir      = "db"
	damageIndexDir = damageDir + "/index"
	damageKeys     = 1200 // keys of round 0; round 3 adds damageKeys/6
)

// damageRounds returns the fixture's writes, round by round. Each round is
// followed by a checkpoint (rounds 2 and 3 by Close's; round 3 runs after a
// reopen), so each leaves one table. After round 0 (every key) a compaction
// moves everything to the bottom level; rounds 1 to 3 each overwrite and
// delete keys of their own third of the key space (round 3 adds new keys
// after the last), so their tables sit side by side in one L0 sublevel,
// below Pebble's L0 compaction score (2 * sublevels / L0CompactionThreshold
// 4), with tombstones too sparse to make a tombstone-dense block: no
// automatic compaction runs. So the index files have the same names and
// sizes on every run, and the tables the same bytes (Pebble's MANIFESTs hold
// creation times; heapkv's own files, a random database ID). Values are
// inline (up to 64 bytes) or in the heap.
func damageRounds() [][]wOp {
	rng := rand.New(rand.NewPCG(0x1D5, 0xDA))
	key := func(i int) string { return fmt.Sprintf("k%05d", i) }
	val := func(i, round int) []byte {
		n := rng.IntN(65) // inline
		if rng.IntN(2) == 0 {
			n = 65 + rng.IntN(700) // heap
		}
		v := make([]byte, n)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		copy(v, fmt.Sprintf("%d/%d/", i, round))
		return v
	}
	rounds := make([][]wOp, 4)
	for i := range damageKeys {
		rounds[0] = append(rounds[0], wOp{kind: wPut, key: key(i), val: val(i, 0)})
	}
	third := damageKeys / 3
	for r := 1; r <= 3; r++ {
		hi := r * third
		if r == 3 {
			hi = damageKeys + damageKeys/6
		}
		for i := (r - 1) * third; i < hi; i++ {
			switch {
			case i >= damageKeys || i%3 == r-1:
				rounds[r] = append(rounds[r], wOp{kind: wPut, key: key(i), val: val(i, r)})
			case i%10 == r:
				rounds[r] = append(rounds[r], wOp{kind: wDelete, key: key(i)})
			}
		}
	}
	return rounds
}

// damageModel is the fixture's content: every key ever written, and its
// value (nil: absent).
type damageModel struct {
	keys []string
	vals map[string][]byte
}

func newDamageModel() *damageModel {
	m := &damageModel{vals: map[string][]byte{}}
	for _, r := range damageRounds() {
		for _, o := range r {
			if o.kind == wPut {
				m.vals[o.key] = o.val
			} else {
				m.vals[o.key] = nil
			}
		}
	}
	for k := range m.vals {
		m.keys = append(m.keys, k)
	}
	slices.Sort(m.keys)
	return m
}

func (m *damageModel) present() int64 {
	n := int64(0)
	for _, v := range m.vals {
		if v != nil {
			n++
		}
	}
	return n
}

// damageOptions are faultOptions with one allocation cursor: the allocator
// starts at a random cursor, so with two the heap layout, and with it the
// index entries, would differ from build to build.
func damageOptions(fs vfs.FS) *heapkv.Options {
	o := faultOptions(fs)
	o.Cursors = 1
	return o
}

// buildDamageFixture writes the fixture on a MemFS and returns its files
// (path -> contents; directories map to nil). A damage replaces a file's
// contents in such a map, never changes them in place, so a shallow copy of
// the map is a copy of the database.
func buildDamageFixture(t *testing.T) map[string][]byte {
	t.Helper()
	mem := vfs.NewMem()
	db := openTestDB(t, damageDir, damageOptions(mem))
	var err error
	for r, ops := range damageRounds() {
		for chunk := range slices.Chunk(ops, 100) {
			var b heapkv.Batch
			for _, o := range chunk {
				if o.kind == wPut {
					b.Put([]byte(o.key), o.val)
				} else {
					b.Delete([]byte(o.key))
				}
			}
			if err := db.Apply(&b, nil); err != nil {
				t.Fatal(err)
			}
		}
		switch r {
		case 0:
			err = errors.Join(db.Checkpoint(), heapkv.CompactIndexParallel(db))
		case 1:
			err = db.Checkpoint()
		case 2:
			// Close checkpoints; Pebble's first flush after the reopen
			// starts a new MANIFEST (the old one is kept, obsolete), and
			// the reopen writes a new OPTIONS file.
			if err = db.Close(); err == nil {
				db = openTestDB(t, damageDir, damageOptions(mem))
			}
		case 3:
			err = db.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{}
	for p, c := range fsSnapshot(t, mem, damageDir) {
		if c == "<dir>" {
			files[p] = nil
		} else {
			files[p] = []byte(c)
		}
	}
	files[damageDir] = nil
	return files
}

// writeFixtureDir stores files under dir on the real file system: a
// directory's entry is a directory, a file's is named with a ".f" suffix
// (so that an empty file and a directory differ).
func writeFixtureDir(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for p, c := range files {
		if c == nil {
			if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		full := filepath.Join(dir, p) + ".f"
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readFixtureDir is the inverse of writeFixtureDir.
func readFixtureDir(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			files[rel] = nil
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if b == nil {
			b = []byte{}
		}
		files[strings.TrimSuffix(rel, ".f")] = b
		return nil
	})
	return files, err
}

// fixtureFS returns a new MemFS holding files.
func fixtureFS(files map[string][]byte) (*vfs.MemFS, error) {
	mem := vfs.NewMem()
	paths := slices.Sorted(maps.Keys(files))
	for _, p := range paths {
		if files[p] == nil {
			if err := mem.MkdirAll(p, 0o755); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range paths {
		c := files[p]
		if c == nil {
			continue
		}
		f, err := mem.Create(p, vfs.WriteCategoryUnspecified)
		if err != nil {
			return nil, err
		}
		// A copy: under invariants (race builds) MemFS.Write scribbles
		// over the buffer it is given.
		_, werr := f.Write(slices.Clone(c))
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return nil, err
		}
	}
	return mem, nil
}

// indexFiles returns the names in index/ of the fixture's files, by kind:
// "table" (*.sst), "manifest" (MANIFEST-*), "options" (OPTIONS-*),
// "marker" (marker.*); other files are left out.
func indexFiles(files map[string][]byte) map[string][]string {
	out := map[string][]string{}
	for p, c := range files {
		name, ok := strings.CutPrefix(p, damageIndexDir+"/")
		if !ok || c == nil || strings.Contains(name, "/") {
			continue
		}
		switch {
		case strings.HasSuffix(name, ".sst"):
			out["table"] = append(out["table"], name)
		case strings.HasPrefix(name, "MANIFEST-"):
			out["manifest"] = append(out["manifest"], name)
		case strings.HasPrefix(name, "OPTIONS-"):
			out["options"] = append(out["options"], name)
		case strings.HasPrefix(name, "marker."):
			out["marker"] = append(out["marker"], name)
		}
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

// currentManifest returns the name of the MANIFEST the manifest marker
// names (Pebble v2 has no CURRENT file: marker.manifest.<iter>.<name>).
func currentManifest(files map[string][]byte) string {
	for _, n := range indexFiles(files)["marker"] {
		if rest, ok := strings.CutPrefix(n, "marker.manifest."); ok {
			if i := strings.IndexByte(rest, '.'); i >= 0 {
				return rest[i+1:]
			}
		}
	}
	return ""
}

// manifestRecords returns the offsets and lengths of the chunks of a Pebble
// MANIFEST (record/record.go: 32 KiB blocks of chunks, each a 7-byte header
// (checksum uint32, length uint16, type) then the payload).
func manifestRecords(b []byte) (offs, lens []int) {
	const blockSize, header = 32 << 10, 7
	for off := 0; off+header <= len(b); {
		if rem := blockSize - off%blockSize; rem < header {
			off += rem
			continue
		}
		n := int(binary.LittleEndian.Uint16(b[off+4:]))
		if (n == 0 && b[off+6] == 0) || off+header+n > len(b) {
			break
		}
		offs = append(offs, off)
		lens = append(lens, n)
		off += header + n
	}
	return offs, lens
}

// describeIndex lists the fixture's index files with their sizes.
func describeIndex(files map[string][]byte) string {
	var b bytes.Buffer
	for _, kind := range []string{"table", "manifest", "options", "marker"} {
		for _, n := range indexFiles(files)[kind] {
			fmt.Fprintf(&b, "%s %s (%d bytes); ", kind, n, len(files[damageIndexDir+"/"+n]))
		}
	}
	return b.String()
}

// indexDamage is one damage to the fixture's files.
type indexDamage struct {
	desc  string                        // "<kind> <file>: what"
	apply func(files map[string][]byte) // replaces entries, never changes contents
}

// tornTailDamage zeroes the last 4 bytes of the last record of the current
// MANIFEST, which ends the file.
func tornTailDamage(files map[string][]byte) (indexDamage, error) {
	name := currentManifest(files)
	p := damageIndexDir + "/" + name
	b := files[p]
	offs, lens := manifestRecords(b)
	if len(offs) < 2 {
		return indexDamage{}, fmt.Errorf("%s: %d records", name, len(offs))
	}
	// The last record is the ingestion of the last checkpoint's marker, the
	// one before it the edit of that checkpoint's flush: damaging it makes
	// Pebble stop reading there, dropping both.
	last := len(offs) - 1
	if end := offs[last] + 7 + lens[last]; end != len(b) {
		return indexDamage{}, fmt.Errorf("%s: the last record ends at %d of %d bytes", name, end, len(b))
	}
	flush := last - 1
	end := offs[flush] + 7 + lens[flush]
	return indexDamage{
		desc: fmt.Sprintf("manifest %s: zero bytes %d..%d (the end of record %d of %d, at %d)", name, end-4, end, flush+1, len(offs), offs[flush]),
		apply: func(files map[string][]byte) {
			b := slices.Clone(files[p])
			clear(b[end-4 : end])
			files[p] = b
		},
	}, nil
}

// randomDamage returns trial i's damage: a file kind (tables 40%, MANIFESTs
// 30%, OPTIONS 15%, markers 15%), a file of that kind, and a damage, all
// drawn from (seed, i) alone. Tables, MANIFESTs and OPTIONS get random byte
// flips, a zeroed range, or a truncation. Pebble v2 has no CURRENT file: its
// markers are empty files whose state is their name (marker.<name>.<iter>.
// <value>), so a marker is removed, renamed to name another MANIFEST (the
// obsolete one, or a missing one), renamed with one byte of its name
// changed, or given contents.
func randomDamage(files map[string][]byte, seed uint64, i int) indexDamage {
	rng := rand.New(rand.NewPCG(seed, uint64(i)))
	byKind := indexFiles(files)
	var kind string
	switch r := rng.IntN(100); {
	case r < 40:
		kind = "table"
	case r < 70:
		kind = "manifest"
	case r < 85:
		kind = "options"
	default:
		kind = "marker"
	}
	names := byKind[kind]
	name := names[rng.IntN(len(names))]
	if kind == "manifest" && rng.IntN(4) != 0 {
		name = currentManifest(files) // mostly the live one
	}
	p := damageIndexDir + "/" + name
	if kind == "marker" {
		return markerDamage(rng, files, name)
	}
	size := len(files[p])
	if size == 0 {
		return indexDamage{desc: fmt.Sprintf("%s %s: none (empty file)", kind, name), apply: func(map[string][]byte) {}}
	}
	switch rng.IntN(3) {
	case 0:
		n := 1 + rng.IntN(8)
		offs, xors := make([]int, n), make([]byte, n)
		for j := range offs {
			offs[j], xors[j] = rng.IntN(size), byte(1+rng.IntN(255))
		}
		return indexDamage{
			desc: fmt.Sprintf("%s %s: flip %d bytes at %v (of %d)", kind, name, n, offs, size),
			apply: func(files map[string][]byte) {
				b := slices.Clone(files[p])
				for j, off := range offs {
					b[off] ^= xors[j]
				}
				files[p] = b
			},
		}
	case 1:
		off := rng.IntN(size)
		n := 1 + rng.IntN(min(256, size-off))
		return indexDamage{
			desc: fmt.Sprintf("%s %s: zero bytes %d..%d (of %d)", kind, name, off, off+n, size),
			apply: func(files map[string][]byte) {
				b := slices.Clone(files[p])
				clear(b[off : off+n])
				files[p] = b
			},
		}
	default:
		n := rng.IntN(size)
		return indexDamage{
			desc:  fmt.Sprintf("%s %s: truncate to %d bytes (of %d)", kind, name, n, size),
			apply: func(files map[string][]byte) { files[p] = append([]byte{}, files[p][:n]...) }, // never nil
		}
	}
}

func markerDamage(rng *rand.Rand, files map[string][]byte, name string) indexDamage {
	p := damageIndexDir + "/" + name
	rename := func(what, to string) indexDamage {
		return indexDamage{
			desc: fmt.Sprintf("marker %s: %s (renamed to %s)", name, what, to),
			apply: func(files map[string][]byte) {
				files[damageIndexDir+"/"+to] = files[p]
				delete(files, p)
			},
		}
	}
	switch rng.IntN(4) {
	case 0:
		return indexDamage{
			desc:  fmt.Sprintf("marker %s: removed", name),
			apply: func(files map[string][]byte) { delete(files, p) },
		}
	case 1:
		if rest, ok := strings.CutPrefix(name, "marker.manifest."); ok {
			iter, _, _ := strings.Cut(rest, ".")
			other := "MANIFEST-999999" // missing
			for _, m := range indexFiles(files)["manifest"] {
				if m != currentManifest(files) && rng.IntN(2) == 0 {
					other = m
				}
			}
			return rename("names "+other, "marker.manifest."+iter+"."+other)
		}
		// The format-version marker: another format version.
		i := strings.LastIndexByte(name, '.')
		v, _ := strconv.Atoi(name[i+1:])
		v -= 1 + rng.IntN(3)
		return rename(fmt.Sprintf("names format version %d", v), fmt.Sprintf("%s.%03d", name[:i], v))
	case 2:
		b := []byte(name)
		j := rng.IntN(len(b))
		const chars = "0123456789abcdefmnrtMANIFEST.-"
		c := chars[rng.IntN(len(chars))]
		for c == b[j] {
			c = chars[rng.IntN(len(chars))]
		}
		b[j] = c
		return rename(fmt.Sprintf("byte %d of its name changed", j), string(b))
	default:
		garbage := make([]byte, 1+rng.IntN(64))
		for j := range garbage {
			garbage[j] = byte(rng.Uint32())
		}
		return indexDamage{
			desc:  fmt.Sprintf("marker %s: %d bytes of contents written", name, len(garbage)),
			apply: func(files map[string][]byte) { files[p] = slices.Clone(garbage) },
		}
	}
}
