package heapkv_test

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/heapkv/heapkv"
)

// Tests of the mirror marker (MIRROR, mirrormark.go): a mirror's heap file
// is created only in a directory that holds the mirror's own marker, or by
// an explicit AttachReplica; mirrors made before the marker existed get one.

// markerFile is the MIRROR marker of mirror id.
func markerFile(id int) string { return fmt.Sprintf("%s/m%d/MIRROR", mdbDir, id) }

// removeIfThere removes p; a missing file is fine.
func removeIfThere(t *testing.T, e *mirrorEnv, p string) {
	t.Helper()
	if err := e.mem.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

// listMem returns the names in dir on the test's MemFS, sorted.
func listMem(t *testing.T, e *mirrorEnv, dir string) []string {
	t.Helper()
	names, err := e.mem.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// wantMarker checks that mirror id's directory holds a marker of this
// database for replica id: its header is a heapkv header of kind "MR" with
// the heap's database ID, and AttachReplica accepts it (checked elsewhere).
func wantMarker(t *testing.T, e *mirrorEnv, id int) {
	t.Helper()
	b := readFileMem(t, e, markerFile(id))
	heap := readFileMem(t, e, replicaFile(0))
	if len(b) != 40 || string(b[:8]) != "HEAPKVMR" || string(b[12:28]) != string(heap[12:28]) || b[32] != byte(id) {
		t.Fatalf("marker of mirror %d: % x", id, b)
	}
}

// A known mirror whose directory is empty (its disk unmounted, the mount
// point left) stays stale: nothing is created there, not by Open nor by its
// automatic attach, until AttachReplica is called.
func TestMirrorEmptiedDirStaysStale(t *testing.T) {
	e := filledMirrorEnv(t, true, 20)
	removeIfThere(t, e, replicaFile(1))
	removeIfThere(t, e, markerFile(1))

	for round := range 2 {
		db := e.open()
		st := wantState(t, db, 1, heapkv.ReplicaStale)
		if st.Available || !strings.Contains(st.Cause, "replica file missing") {
			t.Fatalf("round %d: mirror on an empty mount point: %+v", round, st)
		}
		for i := range 5 {
			e.put(db, fmt.Sprintf("k%02d", i*3))
		}
		e.checkModel(db)
		mustClose(t, db) // waits for any automatic attach
		if names := listMem(t, e, mdbDir+"/m1"); len(names) != 0 {
			t.Fatalf("round %d: Open created %v in the empty mirror directory", round, names)
		}
	}

	db := e.open()
	defer mustClose(t, db)
	stats, _ := db.Stats()
	if st := attach(t, db, 1); !st.LastFullCopy || st.BlocksCopied != stats.HeapAllocBytes/mBS {
		t.Fatalf("attach of the empty mirror: copied %d (full %v), want the %d allocated", st.BlocksCopied, st.LastFullCopy, stats.HeapAllocBytes/mBS)
	}
	wantMarker(t, e, 1)
	e.checkIdentical(db, 0, 1)
}

// A mirror whose marker is there but whose heap file is not (removed by
// hand; the disk is the right one) is recreated by Open's automatic attach.
func TestMirrorMarkerAllowsRecreate(t *testing.T) {
	e := filledMirrorEnv(t, true, 20)
	removeIfThere(t, e, replicaFile(1))
	db := e.open()
	defer mustClose(t, db)
	if st := waitInSync(t, db, 1); !st.LastFullCopy {
		t.Fatalf("recreated mirror: %+v", st)
	}
	e.checkIdentical(db, 0, 1)
}

// A database whose mirrors were made before markers existed keeps working:
// Open accepts a mirror whose heap file header names the database and the
// replica, and writes its marker; a stale one is attached as before.
func TestMirrorLegacyNoMarker(t *testing.T) {
	e := newMirrorEnv(t, 3)
	db := e.open()
	for i := range 20 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	e.inj.failPath(replicaFile(2), errorfs.OpFileWriteAt)
	for i := range 5 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	wantState(t, db, 2, heapkv.ReplicaStale)
	mustClose(t, db)
	e.inj.heal()
	removeIfThere(t, e, markerFile(1))
	removeIfThere(t, e, markerFile(2))

	e.auto = true
	db = e.open()
	defer mustClose(t, db)
	wantState(t, db, 1, heapkv.ReplicaInSync)
	waitInSync(t, db, 2)
	wantMarker(t, e, 1)
	wantMarker(t, e, 2)
	e.put(db, "after")
	e.checkModel(db)
	e.checkIdentical(db, 0, 1, 2)
}

// A mirror directory holding another database's marker is refused with
// ErrCorrupt naming the marker: by Open of a new database, and by
// AttachReplica of a known mirror (which creates nothing there).
func TestMirrorForeignMarker(t *testing.T) {
	e := newMirrorEnv(t, 2)
	other := newMirrorEnv(t, 1)
	other.setMem(e.mem)
	other.mirrors = []string{"om"}
	db := openTestDB(t, "other", other.options())
	mustClose(t, db)
	foreign := readFileMem(t, e, "other/om/MIRROR")

	if err := e.mem.MkdirAll(mdbDir+"/m1", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFileMem(t, e, markerFile(1), foreign)
	if _, err := heapkv.Open(mdbDir, e.options()); !errors.Is(err, heapkv.ErrCorrupt) || !strings.Contains(err.Error(), "m1/MIRROR") {
		t.Fatalf("new database, mirror holding a foreign marker: %v, want ErrCorrupt naming m1/MIRROR", err)
	}
	if err := e.mem.RemoveAll(mdbDir); err != nil {
		t.Fatal(err)
	}

	db = e.open()
	for i := range 10 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	mustClose(t, db)
	removeIfThere(t, e, replicaFile(1))
	writeFileMem(t, e, markerFile(1), foreign)
	db = e.open()
	defer mustClose(t, db)
	wantState(t, db, 1, heapkv.ReplicaStale)
	if err := db.AttachReplica(t.Context(), 1); !errors.Is(err, heapkv.ErrCorrupt) || !strings.Contains(err.Error(), "m1/MIRROR") {
		t.Fatalf("attach into a directory with a foreign marker: %v, want ErrCorrupt naming m1/MIRROR", err)
	}
	if names := listMem(t, e, mdbDir+"/m1"); !slices.Equal(names, []string{"MIRROR"}) {
		t.Fatalf("after the refused attach the mirror directory holds %v", names)
	}
}

// AttachReplica of a mirror in an empty directory makes its marker durable
// before it creates the heap file: a crash after the marker, with the heap
// file's creation failing, leaves the marker.
func TestMirrorMarkerBeforeHeap(t *testing.T) {
	e := filledMirrorEnv(t, false, 10)
	removeIfThere(t, e, replicaFile(1))
	removeIfThere(t, e, markerFile(1))
	db := e.open()
	defer mustClose(t, db)
	e.inj.failPath(replicaFile(1), errorfs.OpCreate, errorfs.OpOpen)
	if err := db.AttachReplica(t.Context(), 1); err == nil {
		t.Fatal("attach succeeded without its heap file")
	}
	crashed := e.crashClone(vfs.CrashCloneCfg{}) // only what was synced
	if names, err := crashed.List(mdbDir + "/m1"); err != nil || !slices.Equal(names, []string{"MIRROR"}) {
		t.Fatalf("after a crash the mirror directory holds %v (%v), want the marker alone", names, err)
	}
	e.inj.heal()
	attach(t, db, 1)
	wantMarker(t, e, 1)
	e.checkIdentical(db, 0, 1)
}

// Every mirror gets its marker: those of a new database, and one added to
// an existing database (whose heap file Open's automatic attach then
// creates). A new mirror's directory is created, but not a missing parent.
func TestMirrorMarkerWritten(t *testing.T) {
	e := newMirrorEnv(t, 3)
	db := e.open()
	wantMarker(t, e, 1)
	wantMarker(t, e, 2)
	for i := range 10 {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	mustClose(t, db)

	e.mirrors = append(e.mirrors, "nowhere/m3")
	if _, err := heapkv.Open(mdbDir, e.options()); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("a new mirror whose parent is missing: %v, want fs.ErrNotExist naming it", err)
	}
	if _, err := e.mem.Stat(mdbDir + "/nowhere"); err == nil {
		t.Fatal("Open created the missing parent of a mirror")
	}
	e.mirrors[2] = "m3"
	e.auto = true
	db = e.open()
	defer mustClose(t, db)
	waitInSync(t, db, 3)
	wantMarker(t, e, 3)
	e.checkIdentical(db, 0, 1, 2, 3)
}

// A creation that stopped after writing a mirror's marker (its heap file
// could not be made) is retried by the next Open, which removes the
// half-made mirror's marker (its database ID is the one in CREATING) rather
// than refusing the directory as another database's.
func TestMirrorCreateInterrupted(t *testing.T) {
	e := newMirrorEnv(t, 2)
	e.inj.failPath(replicaFile(1), errorfs.OpCreate)
	if _, err := heapkv.Open(mdbDir, e.options()); err == nil {
		t.Fatal("Open succeeded without the mirror's heap file")
	}
	if names := listMem(t, e, mdbDir+"/m1"); !slices.Equal(names, []string{"MIRROR"}) {
		t.Fatalf("after the failed creation the mirror holds %v, want its marker", names)
	}
	before := readFileMem(t, e, markerFile(1))
	e.inj.heal()
	db := e.open()
	defer mustClose(t, db)
	wantMarker(t, e, 1)
	if after := readFileMem(t, e, markerFile(1)); string(after[12:28]) == string(before[12:28]) {
		t.Fatal("the half-made database's marker was kept")
	}
	e.put(db, "k")
	e.checkModel(db)
	e.checkIdentical(db, 0, 1)
}

// filledMirrorEnv returns a database with one mirror, n keys written and
// closed; auto says whether Open attaches stale replicas on its own.
func filledMirrorEnv(t *testing.T, auto bool, n int) *mirrorEnv {
	t.Helper()
	e := newMirrorEnv(t, 2)
	e.auto = auto
	db := e.open()
	for i := range n {
		e.put(db, fmt.Sprintf("k%02d", i))
	}
	mustClose(t, db)
	return e
}
