package heapkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/alloc"
)

// TestCheckFindsPlantedFaults plants each fault Check exists to find — a
// leaked extent, a dangling pointer, a block referenced twice — in an
// otherwise healthy database and expects Check to count it, describe it
// and return ErrCorrupt. The crash tests rely on Check finding nothing;
// this shows that "nothing" is not a blind spot.
func TestCheckFindsPlantedFaults(t *testing.T) {
	for _, fault := range []string{"none", "leak", "dangling", "double"} {
		t.Run(fault, func(t *testing.T) {
			db := openTestDBNoCheck(t, "db", memOptions(vfs.NewMem(), CodecNone))
			for i := range 8 {
				v := bytes.Repeat([]byte{byte('a' + i)}, 700) // two 512-byte blocks
				if err := db.Put([]byte(fmt.Sprintf("k%d", i)), v); err != nil {
					t.Fatal(err)
				}
			}
			var counter func(*CheckReport) int64 // nil: no fault planted
			var problem string
			switch fault {
			case "leak": // blocks allocated and published, referenced by nothing
				c, err := db.alloc.Allocate(3)
				if err != nil {
					t.Fatal(err)
				}
				db.alloc.Publish(c)
				counter, problem = func(r *CheckReport) int64 { return r.LeakedBlocks }, "allocated but unreferenced"
			case "dangling": // k1's blocks freed behind the index's back
				p := heapPointer(t, db, "k1")
				db.alloc.Free(alloc.Extent{Start: p.extents[0].Start, Len: p.extents[0].Len})
				counter, problem = func(r *CheckReport) int64 { return r.DanglingBlocks }, "not allocated"
			case "double": // k9 points at k2's blocks
				p := heapPointer(t, db, "k2")
				if err := db.index.Set([]byte("k9"), appendHeapEntry(nil, &p), pebble.NoSync); err != nil {
					t.Fatal(err)
				}
				counter, problem = func(r *CheckReport) int64 { return r.DoubleRefBlocks }, "twice"
			}
			rep, err := db.Check(context.Background())
			if rep == nil {
				t.Fatalf("no report: %v", err)
			}
			t.Logf("%s:\n%s", fault, rep)
			if counter == nil {
				if err != nil || !rep.OK() || rep.HeapValues != 8 || rep.ValuesVerified != 8 {
					t.Fatalf("healthy database: %v\n%s", err, rep)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) || rep.OK() {
				t.Fatalf("%s: Check = %v, report OK %v; want ErrCorrupt", fault, err, rep.OK())
			}
			if n := counter(rep); n == 0 {
				t.Fatalf("%s: not counted:\n%s", fault, rep)
			}
			if !strings.Contains(strings.Join(rep.Problems, "\n"), problem) {
				t.Fatalf("%s: no problem line mentions %q:\n%s", fault, problem, rep)
			}
		})
	}
}
