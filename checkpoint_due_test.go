package heapkv

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestBackgroundCheckpointsFollowTheLog: a request for a background
// checkpoint runs one only while the log has grown CheckpointLogBytes
// since the last. Every group applied while a checkpoint runs asks again
// before that checkpoint resets the count; the request it leaves behind,
// which the finished checkpoint answered, used to run a checkpoint of
// almost nothing right after it: twice the commit stalls, log rotations and
// index tables of a steady load.
func TestBackgroundCheckpointsFollowTheLog(t *testing.T) {
	const limit = 256 << 10
	o := &Options{NoSync: true, CheckpointLogBytes: limit}
	SetFS(o, vfs.NewMem())
	db := openTestDB(t, "db", o)
	checkpoints := func() int64 {
		t.Helper()
		st, err := db.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.Checkpoints
	}
	// drain returns once the background loop has handled every request
	// sent before it: the second send waits until the loop has taken the
	// first, which it takes only after handling whatever came before.
	drain := func() {
		db.bg.kick <- struct{}{}
		db.bg.kick <- struct{}{}
	}
	start := checkpoints()
	drain()
	if got := checkpoints() - start; got != 0 {
		t.Fatalf("%d checkpoints for requests with no log written", got)
	}

	// Past the limit: the groups ask, one checkpoint answers, and the
	// requests left over run none.
	v := make([]byte, 200) // inline: the log holds it
	for i := 0; int64(i)*int64(len(v)) < limit; i++ {
		if err := db.Put(fmt.Appendf(nil, "k%06d", i), v); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); checkpoints()-start < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no background checkpoint 10s after the log passed CheckpointLogBytes")
		}
	}
	drain()
	drain()
	if got := checkpoints() - start; got != 1 {
		t.Fatalf("%d background checkpoints after one CheckpointLogBytes of log and requests left over, want 1", got)
	}
}
