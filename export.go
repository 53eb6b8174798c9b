package heapkv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/cockroachdb/errors/oserror"
	"github.com/heapkv/heapkv/dump"
	"github.com/heapkv/heapkv/internal/pace"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// Export, Import and Backup (issue 17). Export writes every key and value
// of one snapshot to a stream in the dump format (package dump: versioned,
// checksummed, independent of the database's options); Import makes a new
// database from such a stream; Backup is the two joined by a pipe, into a
// new directory. Writers go on meanwhile: the snapshot pins the heap
// blocks of the values it sees (pins.go), so they are not reused while
// the export reads them.
//
// A backup or an import is built in a sibling directory (dir + ".partial")
// and renamed to dir only once it is complete, closed and synced: after a
// crash dir holds the whole copy or does not exist, never half of one. A
// leftover .partial directory is removed by the next Import or Backup to
// the same dir. The copy holds only live values, written afresh: its heap
// is as compact as a new database's, and a backup of a mirrored database
// is a plain single-replica one, without a space reserve (Options.DiskReserve:
// its first read-write Open makes one). (An incremental backup, copying only the
// heap blocks the tracking bitmaps mark as written since a previous one,
// is not built.)

// ErrBadDump marks a stream Import cannot read: not a dump, damaged, cut
// short. It is dump.ErrFormat.
var ErrBadDump = dump.ErrFormat

// ExportOptions tune Export and Backup; a nil *ExportOptions means the
// defaults.
type ExportOptions struct {
	// BytesPerSecond limits how fast keys and values are read; 0 means no
	// limit.
	BytesPerSecond int64
	// Progress, if set, is called with the running counts every 10,000
	// entries and once at the end, on the exporting goroutine.
	Progress func(ExportStats)
}

// ExportStats counts what an Export, Import or Backup moved.
type ExportStats struct {
	Entries int64  `json:"entries"`
	Bytes   int64  `json:"bytes"` // keys and values
	LSN     uint64 `json:"lsn"`   // of the snapshot exported
}

// progressEvery is how many entries pass between Progress calls.
const progressEvery = 10000

// Export writes every key and value of a snapshot taken now to w, in the
// dump format, and returns what it wrote. Writers may run meanwhile; the
// export does not see them. It stops with ctx's error if ctx ends.
func (db *DB) Export(ctx context.Context, w io.Writer, opts *ExportOptions) (ExportStats, error) {
	var o ExportOptions
	if opts != nil {
		o = *opts
	}
	snap, err := db.NewSnapshot()
	if err != nil {
		return ExportStats{}, err
	}
	defer snap.Close()
	st := ExportStats{LSN: uint64(snap.ref.lsn)}
	it, err := snap.NewIter(nil)
	if err != nil {
		return st, err
	}
	defer it.Close()
	dw, err := dump.NewWriter(w, st.LSN)
	if err != nil {
		return st, err
	}
	pacer := pace.New(o.BytesPerSecond)
	for ok := it.First(); ok; ok = it.Next() {
		k, v, err := it.KeyValue()
		if err != nil {
			return st, fmt.Errorf("heapkv: export: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("heapkv: export: %w", err)
		}
		if err := pacer.Wait(ctx, int64(len(k)+len(v))); err != nil {
			return st, fmt.Errorf("heapkv: export: %w", err)
		}
		if err := dw.Add(k, v); err != nil {
			return st, err
		}
		st.Entries++
		st.Bytes += int64(len(k) + len(v))
		if o.Progress != nil && st.Entries%progressEvery == 0 {
			o.Progress(st)
		}
	}
	if err := it.Close(); err != nil {
		return st, fmt.Errorf("heapkv: export: %w", err)
	}
	if err := dw.Close(); err != nil {
		return st, err
	}
	if o.Progress != nil {
		o.Progress(st)
	}
	return st, nil
}

// importBatchBytes bounds the keys and values one Import batch holds.
const importBatchBytes = 4 << 20

// Import makes a new database in dir holding exactly the entries of the
// dump on r, with opts (any block size, inline threshold or compression:
// the dump does not depend on them). dir must not exist; its parent must.
// A dump that is damaged or cut short is an error wrapping ErrBadDump, and
// then, as after any failure or a crash, dir does not exist: the database
// is built in dir + ".partial" and renamed to dir once complete and synced.
func Import(ctx context.Context, dir string, r io.Reader, opts *Options) (ExportStats, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return ExportStats{}, err
	}
	if o.ReadOnly {
		return ExportStats{}, fmt.Errorf("%w: Import makes a database; ReadOnly is set", ErrInvalidOptions)
	}
	fsys := o.fs
	if _, err := fsys.Stat(dir); err == nil {
		return ExportStats{}, fmt.Errorf("heapkv: import into %s: %w", dir, fs.ErrExist)
	} else if !oserror.IsNotExist(err) {
		return ExportStats{}, fmt.Errorf("heapkv: import into %s: %w", dir, err)
	}
	partial := dir + ".partial"
	if err := fsys.RemoveAll(partial); err != nil {
		return ExportStats{}, fmt.Errorf("heapkv: import: remove the leftover %s: %w", partial, err)
	}
	o.NoSync = true // one Sync at the end makes it all durable
	// No space reserve in the copy: a backup would carry DiskReserve bytes
	// of nothing; the copy's first read-write Open makes one.
	o.DiskReserve = -1
	db, err := Open(partial, &o)
	if err != nil {
		return ExportStats{}, fmt.Errorf("heapkv: import: %w", err)
	}
	st, err := db.load(ctx, r)
	if err == nil {
		err = db.Sync()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(partial, dir)
	}
	if err == nil {
		err = vfsutil.SyncDir(fsys, fsys.PathDir(dir))
	}
	if err != nil {
		if rerr := fsys.RemoveAll(partial); rerr != nil {
			err = errors.Join(err, fmt.Errorf("heapkv: import: remove %s: %w", partial, rerr))
		}
		return st, fmt.Errorf("heapkv: import into %s: %w", dir, err)
	}
	return st, nil
}

// load writes every entry of the dump on r to db, in batches.
func (db *DB) load(ctx context.Context, r io.Reader) (ExportStats, error) {
	dr, h, err := dump.NewReader(r, dump.Limits{MaxKey: MaxKeySize, MaxValue: MaxValueSize})
	if err != nil {
		return ExportStats{}, err
	}
	st := ExportStats{LSN: h.LSN}
	b := db.NewBatch()
	pending := 0
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		err := db.Apply(b, nil)
		b.Reset()
		pending = 0
		return err
	}
	for {
		k, v, err := dr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, err
		}
		if err := ctx.Err(); err != nil {
			return st, err
		}
		b.Put(k, v)
		st.Entries++
		st.Bytes += int64(len(k) + len(v))
		if pending += len(k) + len(v); pending >= importBatchBytes || b.Len() >= MaxBatchOps {
			if err := flush(); err != nil {
				return st, err
			}
		}
	}
	return st, flush()
}

// Backup writes a consistent copy of the database, as of a snapshot taken
// now, to the new directory dir (which must not exist; its parent must),
// while writers go on. The copy is a database of its own, made with this
// one's options but without mirrors; open it (or restore it by moving it
// into place) as any other. See Import for what a failure or a crash
// leaves: dir complete, or no dir.
func (db *DB) Backup(ctx context.Context, dir string, opts *ExportOptions) (ExportStats, error) {
	o := db.opts
	o.Mirrors, o.ReadOnly, o.Logger = nil, false, db.logger.With("backup", dir)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := db.Export(ctx, pw, opts)
		pw.CloseWithError(err) // nil: the reader sees io.EOF after End
		done <- err
	}()
	st, err := Import(ctx, dir, pr, &o)                             // an export error reaches it through the pipe
	pr.CloseWithError(errors.New("heapkv: backup: import stopped")) // ends an export still writing
	eerr := <-done
	switch {
	case err != nil:
		return st, fmt.Errorf("heapkv: backup: %w", err)
	case eerr != nil:
		return st, fmt.Errorf("heapkv: backup to %s: %w", dir, eerr)
	}
	return st, nil
}
