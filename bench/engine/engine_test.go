package engine

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestEngines(t *testing.T) {
	for _, name := range Names() {
		if name == "noop" {
			continue // stores nothing by design: TestNoop
		}
		for _, sync := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sync=%v", name, sync), func(t *testing.T) {
				dir := t.TempDir()
				db, err := Open(name, dir, sync)
				if err != nil {
					t.Fatal(err)
				}
				val := bytes.Repeat([]byte("v"), 2000)
				for i := 0; i < 100; i++ {
					if err := db.Insert([]byte(fmt.Sprintf("user%03d", i)), val); err != nil {
						t.Fatal(err)
					}
				}
				if err := db.Update([]byte("user007"), []byte("new")); err != nil {
					t.Fatal(err)
				}
				if v, err := db.Read([]byte("user007")); err != nil || string(v) != "new" {
					t.Fatalf("read after update: %q %v", v, err)
				}
				if v, err := db.Read([]byte("user008")); err != nil || !bytes.Equal(v, val) {
					t.Fatalf("read: %d bytes, %v", len(v), err)
				}
				if _, err := db.Read([]byte("nope")); !errors.Is(err, ErrNotFound) {
					t.Fatalf("missing key: %v", err)
				}
				if n, err := db.Scan([]byte("user090"), 50); err != nil || n != 10 {
					t.Fatalf("scan: %d %v", n, err)
				}
				if n, err := db.Scan([]byte("user000"), 5); err != nil || n != 5 {
					t.Fatalf("scan: %d %v", n, err)
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				// Reopen: data survived.
				db, err = Open(name, dir, sync)
				if err != nil {
					t.Fatal(err)
				}
				if v, err := db.Read([]byte("user007")); err != nil || string(v) != "new" {
					t.Fatalf("read after reopen: %q %v", v, err)
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// The no-op engine keeps nothing but the size of the last value written,
// which its Reads return as zeros.
func TestNoop(t *testing.T) {
	db, err := Open("noop", t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Insert([]byte("k"), make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := db.Update([]byte("k"), []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if v, err := db.Read([]byte("x")); err != nil || !bytes.Equal(v, make([]byte, 3)) {
		t.Fatalf("read: %q %v", v, err)
	}
	if n, err := db.Scan([]byte("a"), 7); n != 7 || err != nil {
		t.Fatalf("scan: %d %v", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// Pebble's adapters report their WAL's device flushes: fifty synced
// inserts from one writer take at least fifty, each with a duration.
func TestPebbleCounters(t *testing.T) {
	for _, name := range []string{"pebble", "pebble-tuned", "pebble-vsep"} {
		t.Run(name, func(t *testing.T) {
			db, err := Open(name, t.TempDir(), true)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			cs, ok := db.(Counters)
			if !ok {
				t.Fatalf("%s does not report counters", name)
			}
			before, err := cs.Counters()
			if err != nil {
				t.Fatal(err)
			}
			val := bytes.Repeat([]byte("v"), 1000)
			for i := range 50 {
				if err := db.Insert(fmt.Appendf(nil, "user%03d", i), val); err != nil {
					t.Fatal(err)
				}
			}
			// Pebble's flush loop records a sync's latency after the sync
			// has released its waiters (pebble v2.1.7 record/log_writer.go:
			// flushPending, then fsyncLatency.Observe), so the last insert
			// can return before its sync is counted: wait for it a while.
			var after map[string]float64
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
				if after, err = cs.Counters(); err != nil {
					t.Fatal(err)
				}
				if after["syncs"]-before["syncs"] >= 50 || time.Now().After(deadline) {
					break
				}
			}
			syncs := after["syncs"] - before["syncs"]
			if syncs < 50 || after["sync_seconds"] <= before["sync_seconds"] || after["wal_bytes_written"]-before["wal_bytes_written"] < 50*1000 {
				t.Fatalf("after 50 synced inserts: %v (before: %v)", after, before)
			}
		})
	}
}

// SetPebbleCacheSize replaces the 1 GiB block cache of the Pebble engines
// that set one; 0 keeps it.
func TestPebbleCacheSize(t *testing.T) {
	defer SetPebbleCacheSize(0)
	for _, tc := range []struct{ set, want int64 }{{0, 1 << 30}, {3 << 30, 3 << 30}, {64 << 20, 64 << 20}} {
		SetPebbleCacheSize(tc.set)
		for _, name := range []string{"pebble-tuned", "pebble-vsep"} {
			db, err := Open(name, t.TempDir(), false)
			if err != nil {
				t.Fatal(err)
			}
			if got := db.(*pebbleDB).cache.MaxSize(); got != tc.want {
				t.Errorf("%s with SetPebbleCacheSize(%d): block cache of %d bytes, want %d", name, tc.set, got, tc.want)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
