//go:build linux

package heapkv_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/heapkv/heapkv"
)

func TestCompactGivesSpaceBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	db := openTestDB(t, dir, compactOptions())
	model := fillThenDelete(t, db, 3000)
	heap := filepath.Join(dir, "heap")
	size0, alloc0 := fileSpace(t, heap)
	st0 := mustStats(t, db)

	var progress int
	res, err := db.Compact(t.Context(), &heapkv.CompactOptions{Progress: func(heapkv.CompactResult) { progress++ }})
	mustNoErr(t, err)
	t.Logf("%+v", res)
	size1, alloc1 := fileSpace(t, heap)
	t.Logf("heap file: %d bytes, %d allocated before; %d, %d after; live %d", size0, alloc0, size1, alloc1, st0.HeapLiveBytes)
	if res.Unsupported {
		t.Fatalf("the test's file system cannot punch holes or truncate: %+v", res)
	}
	if res.ValuesMoved == 0 || res.SegmentsMoved == 0 || res.SegmentsPunched == 0 || res.SegmentsCut == 0 || progress < 2 {
		t.Fatalf("compact did not move, punch and cut: %+v (%d progress calls)", res, progress)
	}
	if res.AllocatedBytesBefore != alloc0 || res.AllocatedBytesAfter != alloc1 || res.FileBytesAfter != size1 {
		t.Fatalf("the result's file figures %+v differ from stat's (%d, %d; %d, %d)", res, size0, alloc0, size1, alloc1)
	}
	// A tenth of the values is left: the file keeps little more than them
	// (one segment of slack per cursor, a header, partly filled segments).
	live := mustStats(t, db).HeapLiveBytes
	if alloc1 > live+4*64*4096+1<<20 || size1 >= size0/2 {
		t.Fatalf("after Compact the heap file has %d bytes, %d allocated, for %d live bytes (before: %d, %d)",
			size1, alloc1, live, size0, alloc0)
	}
	st := mustStats(t, db)
	if st.HeapSegments >= st0.HeapSegments || st.HeapFileAllocatedBytes != alloc1 {
		t.Fatalf("stats after compact: %d segments (before %d), %d allocated (stat: %d)",
			st.HeapSegments, st0.HeapSegments, st.HeapFileAllocatedBytes, alloc1)
	}
	checkContents(t, db, model)

	// A second Compact finds nothing to move.
	res, err = db.Compact(t.Context(), nil)
	mustNoErr(t, err)
	if res.ValuesMoved != 0 || res.SegmentsCut != 0 {
		t.Fatalf("a second compact moved or cut: %+v", res)
	}

	// The heap grows again after the cut, and everything survives a reopen.
	for i := 3000; i < 3500; i++ {
		v := compactValue(i, 1)
		mustNoErr(t, db.Put(compactKey(i), v))
		model[string(compactKey(i))] = v
	}
	mustNoErr(t, db.Close())
	db = openTestDB(t, dir, compactOptions())
	checkContents(t, db, model)
}

// TestCompactMirrored gives space back on every replica.
func TestCompactMirrored(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "db")
	o := compactOptions()
	o.Mirrors = []string{filepath.Join(root, "mirror")}
	db := openTestDB(t, dir, o)
	model := fillThenDelete(t, db, 2000)
	files := []string{filepath.Join(dir, "heap"), filepath.Join(root, "mirror", "heap")}
	var before [2]int64
	for i, f := range files {
		_, before[i] = fileSpace(t, f)
	}
	res, err := db.Compact(t.Context(), nil)
	mustNoErr(t, err)
	for i, f := range files {
		size, alloc := fileSpace(t, f)
		if alloc > before[i]/3 || size != res.FileBytesAfter {
			t.Fatalf("replica %d: %d bytes allocated (before %d), size %d (replica 0: %d)", i, alloc, before[i], size, res.FileBytesAfter)
		}
	}
	checkContents(t, db, model)
	if _, err := db.Scrub(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// fileSpace returns a file's size and the bytes its file system allocated
// to it, read with stat(2) independently of the database.
func fileSpace(t *testing.T, path string) (size, allocated int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no stat(2) blocks on this platform")
	}
	return fi.Size(), st.Blocks * 512
}
