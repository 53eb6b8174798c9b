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
