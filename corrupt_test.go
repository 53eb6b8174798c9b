package heapkv_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/wal"
)

// Damaged, missing and foreign files (DESIGN "Checkpoint and recovery":
// "Opening twice, a missing file, a foreign file, a torn MANIFEST: a clear
// error, nothing overwritten"). Each case damages a crashed database (its
// log holds synced records after the last checkpoint), and Open must fail
// with an error wrapping ErrCorrupt that names the damaged file, having
// created, changed and deleted nothing.

const corruptDir = "db"

// corruptFixture builds a database on a fresh crashable MemFS: values in the
// heap and inline, a checkpoint, then more synced writes that only the log
// holds, and returns the state a crash leaves (a clone keeping only synced
// data). marker is a heap value whose bytes are easy to find in the heap.
func corruptFixture(t *testing.T, seed byte) (fs *vfs.MemFS, marker []byte) {
	t.Helper()
	mem := vfs.NewCrashableMem()
	// Heap first: the damage tests flip bits in the heap file of a crash
	// clone, which must hold every value (a carried value's heap blocks
	// reach the disk only at a checkpoint, and recovery rewrites them).
	o := faultOptions(mem)
	o.CarryLimit = -1
	db := openTestDB(t, corruptDir, o)
	put := func(k string, v []byte) {
		if err := db.Put([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		put(fmt.Sprintf("a%02d", i), bytes.Repeat([]byte{seed, byte(i)}, 100*i))
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	marker = make([]byte, 2800)
	for i := range marker {
		marker[i] = byte(i*i/7) ^ byte(i>>5) ^ seed
	}
	put("marker", marker)
	for i := range 12 {
		put(fmt.Sprintf("b%02d", i), bytes.Repeat([]byte{seed, byte(i), 7}, 50*i))
	}
	fs = mem.CrashClone(vfs.CrashCloneCfg{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return fs, marker
}

// fsSnapshot maps every path under dir to its contents ("<dir>" for
// directories).
func fsSnapshot(t *testing.T, fs vfs.FS, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(string)
	walk = func(d string) {
		names, err := fs.List(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			p := fs.PathJoin(d, n)
			st, err := fs.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.IsDir() {
				out[p] = "<dir>"
				walk(p)
				continue
			}
			out[p] = string(readVFSFile(t, fs, p))
		}
	}
	walk(dir)
	return out
}

func readVFSFile(t *testing.T, fs vfs.FS, p string) []byte {
	t.Helper()
	f, err := fs.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeVFSFile(t *testing.T, fs vfs.FS, p string, b []byte) {
	t.Helper()
	f, err := fs.Create(p, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		t.Fatal(err)
	}
}

// newestFile returns the path in dir of the last (by name) file whose name
// starts with prefix: the newest MANIFEST or allocation snapshot. (A crash
// may leave an older one whose removal was not yet durable.)
func newestFile(t *testing.T, fs vfs.FS, dir, prefix string) string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) && !strings.HasSuffix(n, ".tmp") {
			found = append(found, n)
		}
	}
	if len(found) == 0 {
		t.Fatalf("%s: no file named %s*", dir, prefix)
	}
	slices.Sort(found)
	return fs.PathJoin(dir, found[len(found)-1])
}

func flipFileBit(t *testing.T, fs vfs.FS, p string, off int) {
	t.Helper()
	b := readVFSFile(t, fs, p)
	if off < 0 {
		off += len(b)
	}
	if off < 0 || off >= len(b) {
		t.Fatalf("%s: offset %d outside %d bytes", p, off, len(b))
	}
	b[off] ^= 0x10
	writeVFSFile(t, fs, p, b)
}

// walRecords returns the log segment holding the most records and the
// offsets of its records (segment header 48 bytes; record header 24 bytes,
// payload length at offset 4; see wal/segment.go and wal/frame.go).
func walRecords(t *testing.T, fs vfs.FS) (path string, offs []int) {
	t.Helper()
	dir := fs.PathJoin(corruptDir, "wal")
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.HasSuffix(n, ".log") { // e.g. the sync mark, wal.SyncMarkName
			continue
		}
		p := fs.PathJoin(dir, n)
		b := readVFSFile(t, fs, p)
		// Salted segments (wal/segment.go, wal/frame.go): records of a
		// 32-byte header from byte 56, then zeros to the preallocated end.
		var o []int
		for off := wal.SaltedSegmentHeaderSize; off+wal.SaltedRecordHeaderSize <= len(b); {
			n := int(binary.LittleEndian.Uint32(b[off+4:]))
			if n == 0 || off+wal.SaltedRecordHeaderSize+n > len(b) {
				break
			}
			o = append(o, off)
			off += wal.SaltedRecordHeaderSize + n
		}
		if len(o) > len(offs) {
			path, offs = p, o
		}
	}
	if len(offs) < 5 {
		t.Fatalf("the fixture's log holds only %d records in %s", len(offs), path)
	}
	return path, offs
}

func TestOpenCorrupt(t *testing.T) {
	other, _ := corruptFixture(t, 99) // another database, for foreign files
	cases := []struct {
		name   string
		damage func(t *testing.T, fs vfs.FS) (file string) // returns the name the error must show
	}{
		{"missing-manifest", func(t *testing.T, fs vfs.FS) string {
			names, err := fs.List(corruptDir)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				if strings.HasPrefix(n, "MANIFEST-") {
					if err := fs.Remove(fs.PathJoin(corruptDir, n)); err != nil {
						t.Fatal(err)
					}
				}
			}
			return "MANIFEST"
		}},
		{"manifest-truncated", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "MANIFEST-")
			b := readVFSFile(t, fs, p)
			writeVFSFile(t, fs, p, b[:len(b)-9])
			return fs.PathBase(p)
		}},
		{"manifest-truncated-in-header", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "MANIFEST-")
			writeVFSFile(t, fs, p, readVFSFile(t, fs, p)[:20])
			return fs.PathBase(p)
		}},
		{"manifest-empty", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "MANIFEST-")
			writeVFSFile(t, fs, p, nil)
			return fs.PathBase(p)
		}},
		{"manifest-bitflip-header", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "MANIFEST-")
			flipFileBit(t, fs, p, 14) // database ID
			return fs.PathBase(p)
		}},
		{"manifest-bitflip-body", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "MANIFEST-")
			flipFileBit(t, fs, p, 32+9) // checkpoint LSN
			return fs.PathBase(p)
		}},
		{"manifest-bitflip-crc", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "MANIFEST-")
			flipFileBit(t, fs, p, -1)
			return fs.PathBase(p)
		}},
		{"manifest-foreign", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "MANIFEST-")
			writeVFSFile(t, fs, p, readVFSFile(t, other, newestFile(t, other, corruptDir, "MANIFEST-")))
			return fs.PathBase(p)
		}},
		{"manifest-foreign-newer", func(t *testing.T, fs vfs.FS) string {
			writeVFSFile(t, fs, fs.PathJoin(corruptDir, "MANIFEST-999999"),
				readVFSFile(t, other, newestFile(t, other, corruptDir, "MANIFEST-")))
			return "MANIFEST-999999"
		}},
		{"missing-heap", func(t *testing.T, fs vfs.FS) string {
			if err := fs.Remove(fs.PathJoin(corruptDir, "heap")); err != nil {
				t.Fatal(err)
			}
			return "heap"
		}},
		{"heap-bitflip-magic", func(t *testing.T, fs vfs.FS) string {
			flipFileBit(t, fs, fs.PathJoin(corruptDir, "heap"), 2)
			return "heap"
		}},
		{"heap-bitflip-dbid", func(t *testing.T, fs vfs.FS) string {
			flipFileBit(t, fs, fs.PathJoin(corruptDir, "heap"), 20)
			return "heap"
		}},
		{"heap-bitflip-blocksize", func(t *testing.T, fs vfs.FS) string {
			flipFileBit(t, fs, fs.PathJoin(corruptDir, "heap"), 33)
			return "heap"
		}},
		{"heap-bitflip-replica-crc", func(t *testing.T, fs vfs.FS) string {
			flipFileBit(t, fs, fs.PathJoin(corruptDir, "heap"), 41)
			return "heap"
		}},
		{"heap-foreign", func(t *testing.T, fs vfs.FS) string {
			p := fs.PathJoin(corruptDir, "heap")
			writeVFSFile(t, fs, p, readVFSFile(t, other, p))
			return "heap"
		}},
		{"missing-alloc-snapshot", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "alloc-")
			if err := fs.Remove(p); err != nil {
				t.Fatal(err)
			}
			return fs.PathBase(p)
		}},
		{"alloc-snapshot-bitflip", func(t *testing.T, fs vfs.FS) string {
			p := newestFile(t, fs, corruptDir, "alloc-")
			flipFileBit(t, fs, p, -3)
			return fs.PathBase(p)
		}},
		{"log-record-bitflip-payload", func(t *testing.T, fs vfs.FS) string {
			p, offs := walRecords(t, fs)
			flipFileBit(t, fs, p, offs[len(offs)/2]+wal.SaltedRecordHeaderSize+3)
			return fs.PathBase(p)
		}},
		{"log-record-bitflip-header", func(t *testing.T, fs vfs.FS) string {
			p, offs := walRecords(t, fs)
			flipFileBit(t, fs, p, offs[len(offs)/2]+9) // its LSN
			return fs.PathBase(p)
		}},
		{"log-segment-header-bitflip", func(t *testing.T, fs vfs.FS) string {
			p, _ := walRecords(t, fs)
			flipFileBit(t, fs, p, 13)
			return fs.PathBase(p)
		}},
		{"wal-foreign-segment", func(t *testing.T, fs vfs.FS) string {
			// Another database's segment, named to continue our log.
			src, _ := walRecords(t, other)
			name := "00000000000000009000.log"
			writeVFSFile(t, fs, fs.PathJoin(corruptDir, "wal", name), readVFSFile(t, other, src))
			return name
		}},
		{"wal-foreign-segment-next", func(t *testing.T, fs vfs.FS) string {
			// Another database's segment under the very name our log
			// continues with.
			p, offs := walRecords(t, fs)
			b := readVFSFile(t, fs, p)
			next := binary.LittleEndian.Uint64(b[offs[len(offs)-1]+8:]) + 1
			src, _ := walRecords(t, other)
			name := fmt.Sprintf("%020d.log", next)
			writeVFSFile(t, fs, fs.PathJoin(corruptDir, "wal", name), readVFSFile(t, other, src))
			return name
		}},
		{"wal-sync-mark-both-slots", func(t *testing.T, fs vfs.FS) string {
			// The LSN fields of both slots (at 4096 and 8192; see
			// wal/syncmark.go).
			p := fs.PathJoin(corruptDir, "wal", wal.SyncMarkName)
			flipFileBit(t, fs, p, 4096+16)
			flipFileBit(t, fs, p, 8192+16)
			return wal.SyncMarkName
		}},
		{"wal-sync-mark-foreign", func(t *testing.T, fs vfs.FS) string {
			p := fs.PathJoin(corruptDir, "wal", wal.SyncMarkName)
			writeVFSFile(t, fs, p, readVFSFile(t, other, p))
			return wal.SyncMarkName
		}},
		{"wal-garbage-segment", func(t *testing.T, fs vfs.FS) string {
			name := "00000000000000000002.log"
			writeVFSFile(t, fs, fs.PathJoin(corruptDir, "wal", name), bytes.Repeat([]byte("not a log segment "), 20))
			return name
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, _ := corruptFixture(t, 1)
			file := c.damage(t, fs)
			before := fsSnapshot(t, fs, corruptDir)
			db, err := heapkv.Open(corruptDir, faultOptions(fs))
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded on a damaged database")
			}
			if !errors.Is(err, heapkv.ErrCorrupt) {
				t.Fatalf("Open: %v; want an error wrapping ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), file) {
				t.Fatalf("Open: %v; the error does not name %s", err, file)
			}
			t.Logf("Open: %v", err)
			diffSnapshots(t, before, fsSnapshot(t, fs, corruptDir))
		})
	}

	// The control: the undamaged fixture opens and holds its data.
	t.Run("undamaged", func(t *testing.T) {
		fs, marker := corruptFixture(t, 1)
		db := openTestDB(t, corruptDir, faultOptions(fs))
		if v, err := db.Get([]byte("marker")); err != nil || !bytes.Equal(v, marker) {
			t.Fatalf("marker: %v", err)
		}
		if v, err := db.Get([]byte("b11")); err != nil || len(v) != 1650 {
			t.Fatalf("b11 (written after the checkpoint): %d bytes, %v", len(v), err)
		}
		if rep, err := db.Check(context.Background()); err != nil {
			t.Fatalf("Check: %v\n%v", err, rep)
		}
	})
}

func diffSnapshots(t *testing.T, before, after map[string]string) {
	t.Helper()
	var diffs []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			diffs = append(diffs, "deleted "+p)
		case a != b:
			diffs = append(diffs, fmt.Sprintf("changed %s (%d -> %d bytes)", p, len(b), len(a)))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, "created "+p)
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		t.Fatalf("a failed Open modified the database:\n  %s", strings.Join(diffs, "\n  "))
	}
}

// TestHeapValueBitFlip flips a bit inside a heap value: Get must fail with
// ErrCorrupt naming the key (never return the wrong bytes), other values
// stay readable, and Check reports the damage.
func TestHeapValueBitFlip(t *testing.T) {
	fs, marker := corruptFixture(t, 2)
	heap := readVFSFile(t, fs, fs.PathJoin(corruptDir, "heap"))
	at := bytes.Index(heap, marker[:100])
	if at < 0 || bytes.Contains(heap[at+1:], marker[:100]) {
		t.Fatal("cannot find the marker value once in the heap file")
	}
	flipFileBit(t, fs, fs.PathJoin(corruptDir, "heap"), at+len(marker)/2)

	db := openTestDBNoCheck(t, corruptDir, faultOptions(fs))
	v, getErr := db.Get([]byte("marker"))
	if !errors.Is(getErr, heapkv.ErrCorrupt) || !strings.Contains(getErr.Error(), "marker") {
		t.Fatalf("Get of the damaged value: %d bytes, %v; want ErrCorrupt naming the key", len(v), getErr)
	}
	if v != nil {
		t.Fatalf("Get returned %d bytes along with the error", len(v))
	}
	if _, err := db.Get([]byte("a19")); err != nil {
		t.Fatalf("an undamaged value: %v", err)
	}
	rep, err := db.Check(context.Background())
	if !errors.Is(err, heapkv.ErrCorrupt) {
		t.Fatalf("Check: %v; want ErrCorrupt", err)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "marker") || rep.ValuesVerified != rep.HeapValues-1 {
		t.Fatalf("Check report does not single out the damaged value:\n%v", rep)
	}
	t.Logf("Get: %v; Check: %v", getErr, rep.Problems)
}

// TestOpenLocked: a second Open of an open database fails with ErrLocked, in
// this process (on a MemFS and on real files) and from another process.
func TestOpenLocked(t *testing.T) {
	mem := vfs.NewMem()
	db := openTestDB(t, corruptDir, faultOptions(mem))
	if _, err := heapkv.Open(corruptDir, faultOptions(mem)); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("second Open on a MemFS: %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "db")
	db = openTestDB(t, dir, nil)
	// Another path to the same directory is the same database.
	if _, err := heapkv.Open(dir+"/./", nil); !errors.Is(err, heapkv.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if got := lockChild(t, dir); got != "locked" {
		t.Fatalf("another process opening the open database: %s, want locked", got)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Released: the child can open it now (so the check above can fail).
	if got := lockChild(t, dir); got != "opened" {
		t.Fatalf("another process opening the closed database: %s, want opened", got)
	}
	db = openTestDB(t, dir, nil)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

const lockEnvDir = "HEAPKV_LOCKCHILD_DIR"

// lockChild runs TestLockChild in a new process on dir and returns what it
// reported.
func lockChild(t *testing.T, dir string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockEnvDir+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lock child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(line, "lockchild: "); ok {
			return s
		}
	}
	t.Fatalf("lock child said nothing:\n%s", out)
	return ""
}

// TestLockChild is the child of TestOpenLocked: it tries to open the
// database and reports the outcome. It does nothing otherwise.
func TestLockChild(t *testing.T) {
	dir := os.Getenv(lockEnvDir)
	if dir == "" {
		t.Skip("child of TestOpenLocked only")
	}
	db, err := heapkv.Open(dir, nil)
	switch {
	case err == nil:
		fmt.Println("lockchild: opened")
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	case errors.Is(err, heapkv.ErrLocked):
		fmt.Println("lockchild: locked")
	default:
		fmt.Printf("lockchild: error %v\n", err)
	}
}
