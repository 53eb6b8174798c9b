package heapkv_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv"
)

func reserveSize(t *testing.T, fs vfs.FS) int64 {
	t.Helper()
	fi, err := fs.Stat(crashDir + "/RESERVE")
	if errors.Is(err, os.ErrNotExist) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func wantDiskFull(t *testing.T, db *heapkv.DB, want bool) {
	t.Helper()
	st, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.DiskFull != want {
		t.Fatalf("Stats.DiskFull = %v, want %v", st.DiskFull, want)
	}
}

// TestDiskReserveStates walks the space reserve through its states on a
// file system whose free space the test sets: made at Open; released by
// the first ENOSPC, which is retried and succeeds; values refused while
// less than half the reserve is free, deletes taken; the released state
// kept across a reopen; made again by a checkpoint once there is room.
// (The real-file-system version is TestDiskFullExt4.)
func TestDiskReserveStates(t *testing.T) {
	const reserve = 1 << 20
	mem := vfs.NewMem()
	plenty := vfs.DiskUsage{AvailBytes: 1 << 30, TotalBytes: 2 << 30}
	tight := vfs.DiskUsage{AvailBytes: reserve / 4, TotalBytes: 2 << 30}
	mem.TestingSetDiskUsage(plenty)
	heap := crashDir + "/heap"
	// Once armed, the next write to the heap fails with ENOSPC.
	inj := newInjector(injectRule{limit: 1, err: &os.PathError{Op: "write", Path: heap, Err: syscall.ENOSPC},
		match: func(op errorfs.Op) bool {
			return op.Path == heap && (op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileWriteAt)
		}})
	opts := crashOptions()
	opts.DiskReserve = reserve
	heapkv.SetFS(&opts, errorfs.Wrap(mem, inj))
	db := openTestDB(t, crashDir, &opts)
	if n := reserveSize(t, mem); n <= 0 {
		t.Fatalf("RESERVE after Open: size %d, want the made reserve", n)
	}
	wantDiskFull(t, db, false)
	big := bytes.Repeat([]byte{7}, 8<<10)

	// The first ENOSPC releases the reserve; the write is retried and
	// acknowledged.
	inj.armed.Store(true)
	if err := db.Put([]byte("first"), big); err != nil {
		t.Fatalf("Put meeting ENOSPC once: %v", err)
	}
	if len(inj.firedOps()) == 0 {
		t.Fatal("the ENOSPC was never injected")
	}
	if n := reserveSize(t, mem); n != 0 {
		t.Fatalf("RESERVE after ENOSPC: size %d, want 0 (released)", n)
	}
	wantDiskFull(t, db, true)

	// Little room left: values refused, deletes taken, nothing failed.
	mem.TestingSetDiskUsage(tight)
	err := db.Put([]byte("second"), big)
	if !errors.Is(err, heapkv.ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) || errors.Is(err, heapkv.ErrFailed) {
		t.Fatalf("Put on a full disk: %v; want ErrDiskFull and ENOSPC, not ErrFailed", err)
	}
	for i := range 20 {
		if err := db.Put(fmt.Appendf(nil, "k%02d", i), nil); !errors.Is(err, heapkv.ErrDiskFull) {
			t.Fatalf("empty Put on a full disk: %v", err)
		}
	}
	if err := db.Delete([]byte("first")); err != nil {
		t.Fatalf("Delete on a full disk: %v", err)
	}
	if err := db.Checkpoint(); err != nil {
		t.Fatalf("Checkpoint on a full disk: %v", err)
	}
	wantDiskFull(t, db, true) // no room to make the reserve again
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened while still full: the 0-byte RESERVE says it was used.
	db = openTestDB(t, crashDir, &opts)
	wantDiskFull(t, db, true)
	if _, err := db.Get([]byte("first")); !errors.Is(err, heapkv.ErrNotFound) {
		t.Fatalf("Get(first) after its delete: %v", err)
	}
	if err := db.Put([]byte("second"), big); !errors.Is(err, heapkv.ErrDiskFull) {
		t.Fatalf("Put after reopening on a full disk: %v", err)
	}

	// Space is back: the next checkpoint makes the reserve, values are taken.
	mem.TestingSetDiskUsage(plenty)
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	wantDiskFull(t, db, false)
	if n := reserveSize(t, mem); n <= 0 {
		t.Fatalf("RESERVE after space came back: size %d", n)
	}
	if err := db.Put([]byte("second"), big); err != nil {
		t.Fatalf("Put after the reserve was made again: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// DiskReserve < 0 gives the reserve back.
	opts.DiskReserve = -1
	db = openTestDB(t, crashDir, &opts)
	if v, err := db.Get([]byte("second")); err != nil || !bytes.Equal(v, big) {
		t.Fatalf("Get(second) = %d bytes, %v", len(v), err)
	}
	if n := reserveSize(t, mem); n != -1 {
		t.Fatalf("RESERVE with DiskReserve < 0: size %d, want none", n)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointManifestDiskFull: a checkpoint whose MANIFEST write meets
// ENOSPC returns ErrDiskFull with it, as its other writes do (Close's
// checkpoint on a nearly full ext4 image met this in
// TestCheckpointCloseNearlyFull); the next checkpoint, with room, works.
func TestCheckpointManifestDiskFull(t *testing.T) {
	mem := vfs.NewMem()
	isManifest := func(p string) bool { return strings.HasPrefix(p, crashDir+"/MANIFEST-") } // not the index's
	inj := newInjector(injectRule{limit: -1, err: syscall.ENOSPC,
		match: func(op errorfs.Op) bool {
			return isManifest(op.Path) && (op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileWriteAt)
		}})
	opts := crashOptions()
	heapkv.SetFS(&opts, errorfs.Wrap(mem, inj))
	db := openTestDB(t, crashDir, &opts)
	if err := db.Put([]byte("k"), bytes.Repeat([]byte{1}, 3000)); err != nil {
		t.Fatal(err)
	}
	inj.armed.Store(true)
	err := db.Checkpoint()
	if len(inj.firedOps()) == 0 {
		t.Fatal("no MANIFEST write met the injected ENOSPC; the test proves nothing")
	}
	if !errors.Is(err, heapkv.ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Checkpoint whose MANIFEST write found the disk full: %v; want ErrDiskFull and ENOSPC", err)
	}
	inj.armed.Store(false)
	if err := db.Checkpoint(); err != nil {
		t.Fatalf("Checkpoint with room again: %v", err)
	}
	if v, err := db.Get([]byte("k")); err != nil || len(v) != 3000 {
		t.Fatalf("Get after the checkpoints: %d bytes, %v", len(v), err)
	}
}
