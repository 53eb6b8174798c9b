package heapkv_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/heapkv/heapkv"
)

// Reads through the heap's memory map (Options.NoHeapMap, mirror/mapped.go)
// on the real file system. The mapped replica's heap file is truncated from
// another descriptor under the open database, so that reads of the values
// past its new end fault on the map (SIGBUS): with a mirror every value
// still reads back right, served and repaired from the other replica; with
// one replica the reads fail with ErrCorrupt. Nothing crashes. Each way of
// reading a value is tried: Get, ViewValue (whose callback must never run
// on a failed read), an iterator's forward scan (Iterator.mappedValue) and
// one that views the values (Iterator.ViewValue, whose callback must not
// run either: the fault is met verifying the value, before it).
func TestHeapMapTruncatedReplica(t *testing.T) {
	for _, mirrored := range []bool{true, false} {
		for _, read := range []string{"get", "viewvalue", "scan", "iterview"} {
			t.Run(fmt.Sprintf("mirrored=%v/read=%s", mirrored, read), func(t *testing.T) {
				testHeapMapTruncatedReplica(t, mirrored, read)
			})
		}
	}
}

// openMappedDB opens a database on the operating system's file system,
// with a mirror if mirrored, puts value(i) under k000, k001, ... k(n-1),
// syncs, checks that the heap is read through a memory map, and returns
// the database and its Stats.
func openMappedDB(t *testing.T, mirrored bool, n int, value func(int) []byte) (*heapkv.DB, heapkv.Stats) {
	t.Helper()
	opts := &heapkv.Options{CheckpointLogBytes: -1, Logger: slog.New(slog.DiscardHandler)}
	if mirrored {
		opts.Mirrors = []string{filepath.Join(t.TempDir(), "m1")}
	}
	db := heapkv.OpenTestDBNoCheck(t, filepath.Join(t.TempDir(), "db"), opts)
	for i := range n {
		if err := db.Put(fmt.Appendf(nil, "k%03d", i), value(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	s, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if !s.HeapMapped {
		t.Fatal("a database on the operating system's file system does not read through a memory map")
	}
	return db, s
}

func testHeapMapTruncatedReplica(t *testing.T, mirrored bool, read string) {
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a}, 3000) }
	const n = 200
	db, s := openMappedDB(t, mirrored, n, value)
	if err := os.Truncate(db.Replicas()[0].Path, int64(s.BlockSize)); err != nil {
		t.Fatal(err)
	}
	got := make([][]byte, n)
	errs := make([]error, n)
	switch read {
	case "get":
		for i := range n {
			got[i], errs[i] = db.Get(fmt.Appendf(nil, "k%03d", i))
		}
	case "viewvalue":
		for i := range n {
			calls := 0
			errs[i] = db.ViewValue(fmt.Appendf(nil, "k%03d", i), func(v []byte) error {
				calls++
				got[i] = bytes.Clone(v)
				return nil
			})
			if (errs[i] == nil) != (calls == 1) || calls > 1 {
				t.Fatalf("k%03d: ViewValue called its function %d times and returned %v", i, calls, errs[i])
			}
		}
	case "scan", "iterview":
		it, err := db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for ok := it.First(); ok; ok = it.Next() {
			if want := fmt.Sprintf("k%03d", i); string(it.Key()) != want {
				t.Fatalf("scan at %q, want %q", it.Key(), want)
			}
			if read == "scan" {
				v, err := it.Value()
				got[i], errs[i] = bytes.Clone(v), err
			} else {
				calls := 0
				errs[i] = it.ViewValue(func(v []byte) error {
					calls++
					got[i] = bytes.Clone(v)
					return nil
				})
				if (errs[i] == nil) != (calls == 1) || calls > 1 {
					t.Fatalf("k%03d: Iterator.ViewValue called its function %d times and returned %v", i, calls, errs[i])
				}
			}
			i++
		}
		if i != n {
			t.Fatalf("the scan met %d keys, want %d", i, n)
		}
		it.Close() // its first error is errs' first error
	}
	var corrupt int
	for i := range n {
		switch err := errs[i]; {
		case err == nil && bytes.Equal(got[i], value(i)):
		case err == nil:
			t.Fatalf("k%03d: wrong bytes", i)
		case !mirrored && errors.Is(err, heapkv.ErrCorrupt):
			corrupt++
		default:
			t.Fatalf("k%03d: %v", i, err)
		}
	}
	s, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.HeapMapFaults == 0 {
		t.Fatal("no read faulted on the map of the truncated file")
	}
	if mirrored && s.ReadRepairs == 0 {
		t.Fatal("no read repaired the truncated replica")
	}
	if !mirrored && corrupt != n {
		t.Fatalf("%d of %d reads of the truncated heap failed with ErrCorrupt", corrupt, n)
	}
	t.Logf("%d map faults, %d read repairs, %d ErrCorrupt", s.HeapMapFaults, s.ReadRepairs, corrupt)
}

// NoHeapMap reads with pread.
func TestNoHeapMap(t *testing.T) {
	db := heapkv.OpenTestDB(t, t.TempDir(), &heapkv.Options{NoHeapMap: true})
	if err := db.Put([]byte("k"), make([]byte, 10000)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get([]byte("k")); err != nil {
		t.Fatal(err)
	}
	if s, err := db.Stats(); err != nil || s.HeapMapped {
		t.Fatalf("NoHeapMap: HeapMapped %v (%v)", s.HeapMapped, err)
	}
}

// A fault on the map falls back to pread, and here that pread fails too:
// EIO injected by errorfs over the operating system's file system (errorfs
// files pass Fd through, so the heap is still mapped). With a mirror every
// value reads back right from the other replica; with one replica every
// read returns the I/O error. Never wrong bytes, never a crash.
func TestHeapMapEIOOnFallback(t *testing.T) {
	for _, mirrored := range []bool{true, false} {
		t.Run(fmt.Sprintf("mirrored=%v", mirrored), func(t *testing.T) {
			inj := newInjector()
			opts := &heapkv.Options{CheckpointLogBytes: -1, Logger: slog.New(slog.DiscardHandler)}
			heapkv.SetFS(opts, errorfs.Wrap(vfs.Default, inj))
			heapkv.MapAnyFS(opts)
			if mirrored {
				opts.Mirrors = []string{filepath.Join(t.TempDir(), "m1")}
			}
			db := heapkv.OpenTestDBNoCheck(t, filepath.Join(t.TempDir(), "db"), opts)
			value := func(i int) []byte { return bytes.Repeat([]byte{byte(i), 0xa5, byte(i >> 8)}, 2000) }
			const n = 100
			key := func(i int) []byte { return fmt.Appendf(nil, "k%03d", i) }
			for i := range n {
				if err := db.Put(key(i), value(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Sync(); err != nil {
				t.Fatal(err)
			}
			s, err := db.Stats()
			if err != nil || !s.HeapMapped {
				t.Fatalf("the heap is not mapped under errorfs over the OS file system (%v)", err)
			}
			primary := db.Replicas()[0].Path
			if err := os.Truncate(primary, int64(s.BlockSize)); err != nil {
				t.Fatal(err)
			}
			inj.add(injectRule{limit: -1, err: syscall.EIO, match: func(op errorfs.Op) bool {
				return op.Kind == errorfs.OpFileReadAt && op.Path == primary
			}})
			inj.armed.Store(true)
			for i := range n {
				got, err := db.Get(key(i))
				switch {
				case mirrored && (err != nil || !bytes.Equal(got, value(i))):
					t.Fatalf("%s: %d bytes, %v; want the value from the mirror", key(i), len(got), err)
				case !mirrored && !errors.Is(err, syscall.EIO):
					t.Fatalf("%s: %d bytes, %v; want the injected EIO", key(i), len(got), err)
				}
			}
			if s, err = db.Stats(); err != nil || s.HeapMapFaults == 0 {
				t.Fatalf("no read faulted on the map (%v)", err)
			}
			if len(inj.firedOps()) == 0 {
				t.Fatal("no pread of the first replica failed: the fallback was not taken")
			}
			t.Logf("%d map faults, %d injected EIOs, %d read repairs", s.HeapMapFaults, len(inj.firedOps()), s.ReadRepairs)
			inj.armed.Store(false)
			if !mirrored {
				return
			}
			// The repairs rewrote the first replica: its map reads again.
			faults := s.HeapMapFaults
			for i := range n {
				if got, err := db.Get(key(i)); err != nil || !bytes.Equal(got, value(i)) {
					t.Fatalf("%s after the repair: %d bytes, %v", key(i), len(got), err)
				}
			}
			if s, err = db.Stats(); err != nil || s.HeapMapFaults != faults {
				t.Fatalf("reads of the repaired replica faulted on the map %d more times (%v)", s.HeapMapFaults-faults, err)
			}
		})
	}
}
