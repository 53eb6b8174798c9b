package heapkv

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// zeroTestDB opens a database on a MemFS that reports avail bytes free
// (the zeroer looks before it writes).
func zeroTestDB(t *testing.T, avail uint64, o *Options) *DB {
	t.Helper()
	mem := vfs.NewMem()
	mem.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: avail, TotalBytes: 4 * avail, UsedBytes: 3 * avail})
	SetFS(o, mem)
	return openTestDB(t, "db", o)
}

// TestZerosAheadOfUncarriedDurableWrites: durable writes whose values go
// heap first wake the zeroer, which writes zeros up to zeroAheadSegments
// segments past the heap; the values read back, and Check (at cleanup)
// finds nothing wrong.
func TestZerosAheadOfUncarriedDurableWrites(t *testing.T) {
	db := zeroTestDB(t, 1<<40, &Options{CarryLimit: -1, SegmentSize: 1 << 20})
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 20_000+i) }
	for i := range 100 { // about 2 MiB: three 1 MiB segments
		if err := db.Put(fmt.Appendf(nil, "k%03d", i), value(i)); err != nil {
			t.Fatal(err)
		}
	}
	want := uint64(db.alloc.Segments()) * uint64(db.geom.SegmentBlocks)
	for deadline := time.Now().Add(10 * time.Second); db.heap.Reach() < want+uint64(zeroAheadSegments-1)*uint64(db.geom.SegmentBlocks); {
		if time.Now().After(deadline) {
			t.Fatalf("heap reaches %d blocks 10s after the writes, want zeros past %d + %d segments",
				db.heap.Reach(), want, zeroAheadSegments-1)
		}
		time.Sleep(time.Millisecond)
	}
	if db.heap.Zeroed() == 0 {
		t.Fatal("no zeros written")
	}
	for i := range 100 {
		got, err := db.Get(fmt.Appendf(nil, "k%03d", i))
		if err != nil || !bytes.Equal(got, value(i)) {
			t.Fatalf("k%03d: %d bytes, %v", i, len(got), err)
		}
	}
}

// TestNoZerosWithoutHeapFlushes: NoSync writes, carried durable writes and
// a file system without room never get zeros.
func TestNoZerosWithoutHeapFlushes(t *testing.T) {
	cases := []struct {
		name  string
		avail uint64
		carry int
		sync  bool // durable writes (else Options.NoSync)
	}{
		{"nosync", 1 << 40, -1, false},
		{"carried", 1 << 40, 0, true},
		{"no room", 6 << 20, -1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := zeroTestDB(t, c.avail, &Options{CarryLimit: c.carry, SegmentSize: 1 << 20, DiskReserve: 4 << 20, NoSync: !c.sync})
			for i := range 100 {
				if err := db.Put(fmt.Appendf(nil, "k%03d", i), bytes.Repeat([]byte{byte(i)}, 5000)); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Sync(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // a zeroer that was woken has had time to start
			if z := db.heap.Zeroed(); z != 0 {
				t.Fatalf("%d bytes of zeros written", z)
			}
		})
	}
}
