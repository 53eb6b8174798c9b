package heapkv

import (
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// The files of a database directory (ARCHITECTURE.md "On disk" draws the
// tree; each format's byte layout is beside the code that writes it).
const (
	lockFileName        = "LOCK"                 // lock.go
	creatingFileName    = "CREATING"             // present while a new database is made (recover.go)
	manifestPrefix      = "MANIFEST-"            // MANIFEST-<seq> (manifest.go)
	allocPrefix         = "alloc-"               // alloc-<lsn>: allocation snapshot (alloc/snapshot.go)
	trackingPrefix      = "tracking-"            // tracking-<lsn>: stale replicas' bitmaps (mirror/tracking.go)
	keysPrefix          = "keys-"                // keys-<lsn>: the key filter as Close left it (presencefile.go)
	heapFileName        = "heap"                 // heap replica 0, and each mirror's (mirror/)
	mirrorMarkerName    = "MIRROR"               // beside a mirror's heap file (mirrormark.go)
	walDirName          = "wal"                  // the log (wal/)
	indexDirName        = "index"                // Pebble (index.go)
	indexMarkerFileName = "index-marker.sst.tmp" // a checkpoint marker before it is ingested (index.go)
	reserveFileName     = "RESERVE"              // the space reserve (reserve.go)
)

// Limits on what readFile reads. Allocation snapshots and tracking states
// are bitmaps of the heap, at most one bit per block (two per stale
// replica) before their run-length encodings shrink them, so
// maxStateFileSize covers a heap of 16 TiB in 128-byte blocks or 512 TiB
// in 4 KiB blocks.
const (
	maxManifestSize  = 1 << 20
	maxStateFileSize = 1 << 34
)

func manifestFileName(seq uint64) string   { return fmt.Sprintf("%s%06d", manifestPrefix, seq) }
func allocFileName(lsn base.LSN) string    { return fmt.Sprintf("%s%020d", allocPrefix, lsn) }
func trackingFileName(lsn base.LSN) string { return fmt.Sprintf("%s%020d", trackingPrefix, lsn) }
func keysFileName(lsn base.LSN) string     { return fmt.Sprintf("%s%020d", keysPrefix, lsn) }

// readFile reads a whole file into memory, refusing one of more than
// limit bytes: a damaged or foreign file must not make Open allocate
// without bound.
func readFile(fs vfs.FS, path string, limit int64) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d expected", path, fi.Size(), limit)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}

// writeFileAtomic writes data to name in dir via a synced temporary file, a
// rename and a directory sync.
func writeFileAtomic(fs vfs.FS, dir, name string, data []byte) error {
	tmp := fs.PathJoin(dir, name+".tmp")
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := fs.Rename(tmp, fs.PathJoin(dir, name)); err != nil {
		return err
	}
	return vfsutil.SyncDir(fs, dir)
}
