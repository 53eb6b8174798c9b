package heapkv_test

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
)

// A NoSync Put of a new 1 KB value from one writer makes a handful of
// allocations (refinement 36): the claim's extents, the recentWrites key,
// the group (one per Put here) and its commit queue. The request, its
// channel and its op are recycled, and the leader's record and entry
// buffers reused; a change that allocates any of them per write again
// fails this test.
// The race detector's sync.Pool drops items at random, so the count is
// only checked without it: the test command's second line (README.md)
// runs it so.
func TestPutAllocations(t *testing.T) {
	if heapkv.RaceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector (sync.Pool drops items at random)")
	}
	opts := &heapkv.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)}
	heapkv.SetFS(opts, vfs.NewMem())
	db := heapkv.OpenTestDB(t, "db", opts)
	value := make([]byte, 1024)
	var keys [][]byte
	for i := range 4000 {
		keys = append(keys, fmt.Appendf(nil, "key-%06d", i))
	}
	for _, k := range keys[:1000] { // warm up: pools, scratch buffers, maps
		if err := db.Put(k, value); err != nil {
			t.Fatal(err)
		}
	}
	next := 1000
	allocs := testing.AllocsPerRun(2000, func() {
		if err := db.Put(keys[next], value); err != nil {
			t.Fatal(err)
		}
		next++
	})
	t.Logf("%.2f allocations a Put", allocs)
	const limit = 7 // 15 before refinement 36, 5 after
	if allocs > limit {
		t.Fatalf("a 1 KB NoSync Put made %.2f allocations; want at most %d", allocs, limit)
	}
}
