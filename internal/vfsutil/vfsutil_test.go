package vfsutil_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

func TestSyncDir(t *testing.T) {
	fs := vfs.NewMem()
	if err := fs.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := vfsutil.SyncDir(fs, "d"); err != nil {
		t.Fatalf("SyncDir of an existing directory: %v", err)
	}
	err := vfsutil.SyncDir(fs, "missing")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("SyncDir of a missing directory = %v, want a not-exist error naming it", err)
	}
}

// WriteBack of a real file's written range succeeds (sync_file_range where
// there is one), and of a file without a descriptor does nothing; so does
// StartWriteBack.
func TestWriteBack(t *testing.T) {
	path := t.TempDir() + "/f"
	f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	vfsutil.StartWriteBack(f, 0, 1<<19)
	if err := vfsutil.WriteBack(f, 0, 1<<20); err != nil {
		t.Fatalf("WriteBack of a real file: %v", err)
	}
	mf, err := vfs.NewMem().Create("m", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	vfsutil.StartWriteBack(mf, 0, 10)
	if err := vfsutil.WriteBack(mf, 0, 10); err != nil {
		t.Fatalf("WriteBack of a MemFS file: %v", err)
	}
}
