package heapkv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/cockroachdb/errors/oserror"
	"github.com/heapkv/heapkv/dump"
	"github.com/heapkv/heapkv/internal/base"
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
// its first read-write Open makes one).
//
// Increments (increment.go). Every heap value's index entry records the
// LSN of the write that stored it, so an export can leave out the values
// an earlier export at LSN Since already holds (ExportOptions.Since): it
// names their keys only. Backup into a directory that holds an earlier
// backup of the same database does that and applies the increment in
// place (ApplyIncrement).

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
	// Since, if non-zero, makes Export write an increment to the export
	// this database made at LSN Since (its ExportStats.LSN): a heap value
	// written at or before Since is written as its key alone; other
	// values, and inline ones (which record no LSN), go whole; a key the
	// increment does not name was deleted. ApplyIncrement applies it to a
	// copy of that export. Backup sets it itself.
	Since uint64
}

// ExportStats counts what an Export, Import or Backup moved.
type ExportStats struct {
	Entries int64  `json:"entries"` // keys, kept ones included
	Bytes   int64  `json:"bytes"`   // keys and values
	LSN     uint64 `json:"lsn"`     // of the snapshot exported
	// Kept counts the keys of an increment whose values were left out
	// (unchanged since ExportOptions.Since); Deleted the keys an applied
	// increment removed. Since is the LSN an increment follows.
	Kept    int64  `json:"kept,omitempty"`
	Deleted int64  `json:"deleted,omitempty"`
	Since   uint64 `json:"since,omitempty"`
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
	st := ExportStats{LSN: uint64(snap.ref.lsn), Since: o.Since}
	if o.Since > st.LSN {
		return st, fmt.Errorf("%w: export since LSN %d: the database is at LSN %d", ErrInvalidOptions, o.Since, st.LSN)
	}
	pacer := pace.New(o.BytesPerSecond)
	it, err := snap.NewIter(nil)
	if err != nil {
		return st, err
	}
	defer it.Close()
	var dw *dump.Writer
	if o.Since > 0 {
		dw, err = dump.NewIncrementalWriter(w, st.LSN, o.Since)
	} else {
		dw, err = dump.NewWriter(w, st.LSN)
	}
	if err != nil {
		return st, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("heapkv: export: %w", err)
		}
		kept, err := keptSince(it, base.LSN(o.Since))
		if err != nil {
			return st, fmt.Errorf("heapkv: export: %w", err)
		}
		k, v := it.Key(), []byte(nil)
		if kept {
			err = dw.Keep(k)
			st.Kept++
		} else if k, v, err = it.KeyValue(); err == nil {
			err = dw.Add(k, v)
		}
		if err != nil {
			return st, fmt.Errorf("heapkv: export %q: %w", k, err)
		}
		if err := pacer.Wait(ctx, int64(len(k)+len(v))); err != nil {
			return st, fmt.Errorf("heapkv: export: %w", err)
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

// dumpLimits are the bounds a dump's keys and values must keep.
var dumpLimits = dump.Limits{MaxKey: MaxKeySize, MaxValue: MaxValueSize}

// importBatchBytes bounds the keys and values one Import batch holds.
const importBatchBytes = 4 << 20

// Import makes a new database in dir holding exactly the entries of the
// dump on r, with opts (any block size, inline threshold or compression:
// the dump does not depend on them). dir must not exist; its parent must.
// A dump that is damaged or cut short is an error wrapping ErrBadDump, and
// then, as after any failure or a crash, dir does not exist: the database
// is built in dir + ".partial" and renamed to dir once complete and synced.
func Import(ctx context.Context, dir string, r io.Reader, opts *Options) (ExportStats, error) {
	return importDB(ctx, dir, r, opts, nil)
}

// importDB is Import; finish, if set, runs on the loaded and synced copy
// before it is closed and renamed into place.
func importDB(ctx context.Context, dir string, r io.Reader, opts *Options, finish func(*DB, ExportStats) error) (ExportStats, error) {
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
	// The header first: a stream that is not a dump, or an increment,
	// fails before anything is made.
	dr, h, err := dump.NewReader(r, dumpLimits)
	if err != nil {
		return ExportStats{}, fmt.Errorf("heapkv: import into %s: %w", dir, err)
	}
	if h.Incremental {
		return ExportStats{}, fmt.Errorf("heapkv: import into %s: %w: an increment (from LSN %d to %d) makes no database alone: apply it to a copy of the export at LSN %d (ApplyIncrement)",
			dir, ErrBadDump, h.Since, h.LSN, h.Since)
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
	st, err := db.load(ctx, dr, h)
	if err == nil {
		err = db.Sync()
	}
	if err == nil && finish != nil {
		err = finish(db, st)
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

// load writes every entry of the full dump dr (whose header is h) to db,
// in batches.
func (db *DB) load(ctx context.Context, dr *dump.Reader, h dump.Header) (ExportStats, error) {
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
// now, to dir, while writers go on. The copy is a database of its own,
// made with this one's options but without mirrors; open it (or restore
// it by moving it into place) as any other.
//
// If dir does not exist (its parent must), the copy is made whole; see
// Import for what a failure or a crash leaves: dir complete, or no dir.
// If dir holds an earlier backup of this database, Backup brings it up to
// date incrementally: it copies only the values written since that
// backup's LSN, and deletes what was deleted since (ApplyIncrement). A
// crash or failure meanwhile leaves a copy that Open refuses with
// ErrIncompleteBackup until Backup is run again. opts.Since, if set, must
// be that backup's LSN.
func (db *DB) Backup(ctx context.Context, dir string, opts *ExportOptions) (ExportStats, error) {
	var eo ExportOptions
	if opts != nil {
		eo = *opts
	}
	o := db.opts
	o.Mirrors, o.ReadOnly, o.Logger = nil, false, db.logger.With("backup", dir)
	if _, err := o.fs.Stat(dir); err == nil {
		return db.backupIncrement(ctx, dir, o, eo)
	}
	if eo.Since != 0 {
		return ExportStats{}, fmt.Errorf("heapkv: backup since LSN %d into %s: %w", eo.Since, dir, fs.ErrNotExist)
	}
	var st ExportStats
	err := db.exportTo(ctx, eo, func(r io.Reader) error {
		var err error
		st, err = importDB(ctx, dir, r, &o, func(cp *DB, st ExportStats) error {
			return cp.writeBackupState(backupState{state: backupComplete, source: db.id, sourceLSN: st.LSN, ownLSN: cp.applied.Load()})
		})
		return err
	})
	if err != nil {
		return st, fmt.Errorf("heapkv: backup to %s: %w", dir, err)
	}
	return st, nil
}

// exportTo runs Export with eo into a pipe that consume reads, and returns
// the first of their errors (an export error reaches consume through the
// pipe too).
func (db *DB) exportTo(ctx context.Context, eo ExportOptions, consume func(io.Reader) error) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := db.Export(ctx, pw, &eo)
		pw.CloseWithError(err) // nil: the reader sees io.EOF after End
		done <- err
	}()
	err := consume(pr)
	pr.CloseWithError(errors.New("heapkv: backup: the copy stopped reading")) // ends an export still writing
	if eerr := <-done; err == nil {
		err = eerr
	}
	return err
}
