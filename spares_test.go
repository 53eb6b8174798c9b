package heapkv

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// walFiles returns the sorted names in dir's log directory that end in
// suffix (".log": segments; ".spare": spares).
func walFiles(t *testing.T, fs vfs.FS, dir, suffix string) []string {
	t.Helper()
	names, err := fs.List(fs.PathJoin(dir, walDirName))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, suffix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// TestCloseReleasesSpares: a checkpoint recycles obsolete log segments as
// spares; Close deletes them, and the database opens again, writes across
// rotations (which prepare new spares) and keeps every value.
func TestCloseReleasesSpares(t *testing.T) {
	fs := vfs.NewMem()
	opts := func() *Options {
		return &Options{fs: fs, BlockSize: 512, SegmentSize: 64 * 512, InlineThreshold: 64,
			NoSync: true, LogSegmentSize: 64 << 10, CheckpointLogBytes: 1 << 30,
			Logger: slog.New(slog.DiscardHandler)}
	}
	want := map[string][]byte{}
	write := func(db *DB, round int) {
		for i := range 200 {
			k := fmt.Sprintf("k%03d", i)
			v := bytes.Repeat([]byte{byte('a' + round)}, 700+i)
			if err := db.Put([]byte(k), v); err != nil {
				t.Fatal(err)
			}
			want[k] = v
		}
	}
	db := openTestDB(t, "db", opts())
	for round := range 3 {
		write(db, round)
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	if len(walFiles(t, fs, "db", ".spare")) == 0 {
		t.Fatal("no spare segment before Close: the test proves nothing")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if s := walFiles(t, fs, "db", ".spare"); len(s) != 0 {
		t.Fatalf("spares left after Close: %v", s)
	}
	for round := 3; round < 5; round++ {
		db = openTestDB(t, "db", opts())
		write(db, round)
		if err := db.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		write(db, round+2)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db = openTestDB(t, "db", opts()) // closed and checked at cleanup
	for k, v := range want {
		got, err := db.Get([]byte(k))
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("get %s: %d bytes, %v; want %d bytes", k, len(got), err, len(v))
		}
	}
}
