package heapkv_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

// pebbleManifest returns the path of the index's newest Pebble MANIFEST.
func pebbleManifest(t *testing.T, fs vfs.FS) string {
	t.Helper()
	names, err := fs.List(crashDir + "/index")
	if err != nil {
		t.Fatal(err)
	}
	best := ""
	for _, n := range names {
		if strings.HasPrefix(n, "MANIFEST-") && n > best {
			best = n
		}
	}
	if best == "" {
		t.Fatalf("no Pebble MANIFEST in %v", names)
	}
	return crashDir + "/index/" + best
}

func fileSize(t *testing.T, fs vfs.FS, p string) int64 {
	t.Helper()
	fi, err := fs.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestIndexLostFlushRefused cuts the index's Pebble MANIFEST back to before
// the edit of the last checkpoint's flush, which Pebble reads as a torn
// tail: Open must refuse the index (ErrCorrupt) rather than answer
// ErrNotFound for the keys that flush held. Before the checkpoint marker,
// Open succeeded and those keys were gone.
func TestIndexLostFlushRefused(t *testing.T) {
	for _, cut := range []string{"truncate", "zero"} {
		t.Run(cut, func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			opts := crashOptions()
			opts.CheckpointLogBytes = -1
			heapkv.SetFS(&opts, mem)
			db := openTestDB(t, crashDir, &opts)
			for i := range 50 {
				if err := db.Put(fmt.Appendf(nil, "a%03d", i), []byte("first")); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			manifest := pebbleManifest(t, mem)
			before := fileSize(t, mem, manifest)
			for i := range 50 {
				if err := db.Put(fmt.Appendf(nil, "b%03d", i), []byte("second")); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			if m := pebbleManifest(t, mem); m != manifest {
				t.Skipf("Pebble rotated its MANIFEST (%s -> %s); the cut needs one file", manifest, m)
			}
			after := fileSize(t, mem, manifest)
			if after <= before {
				t.Fatalf("the checkpoint's flush appended nothing to %s (%d -> %d bytes)", manifest, before, after)
			}
			crash := mem.CrashClone(vfs.CrashCloneCfg{})
			b := readVFSFile(t, crash, manifest)
			switch cut {
			case "truncate":
				b = b[:before]
			case "zero":
				clear(b[before:])
			}
			writeVFSFile(t, crash, manifest, b)

			heapkv.SetFS(&opts, crash)
			db2, err := heapkv.Open(crashDir, &opts)
			if err == nil {
				_, gerr := db2.Get([]byte("b000"))
				db2.Close()
				t.Fatalf("Open accepted an index that lost the last flush; Get(b000) = %v", gerr)
			}
			if !errors.Is(err, heapkv.ErrCorrupt) || !strings.Contains(err.Error(), "index") {
				t.Fatalf("Open: %v; want ErrCorrupt naming the index", err)
			}
			// Refusing deleted nothing: the tables of the lost flush are
			// still there for a person (or a repaired MANIFEST) to use.
			if got := readVFSFile(t, crash, manifest); len(got) != len(b) {
				t.Fatalf("Open rewrote %s", manifest)
			}
		})
	}
}
