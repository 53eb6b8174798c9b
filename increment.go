package heapkv

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/heapkv/heapkv/dump"
	"github.com/heapkv/heapkv/internal/base"
)

// Incremental exports and backups (see export.go). An increment names
// every key of its snapshot: with its value if the value was written after
// Since (or is inline), alone (kept) if not. Applying it is a merge of two
// sorted streams, the increment's keys and the copy's: a key only the
// copy has is deleted, a value is written, a kept key must be there (if it
// is not, the copy is not what the export at Since held, and applying
// stops with ErrBadDump). Applying is idempotent, so an interrupted apply
// is finished by applying the same increment, or a later one from the
// same Since, again.

// keptSince reports whether an increment since LSN since (0: a full
// export) names its current key alone: its value lives in the heap and
// was written at or before since.
func keptSince(it *Iterator, since base.LSN) (bool, error) {
	if since == 0 {
		return false, nil
	}
	heap, lsn, err := it.heapLSN()
	return heap && lsn <= since, err
}

// ApplyIncrement applies the increment on r (an Export with
// ExportOptions.Since) to db, which must hold what the export at Since
// held: afterwards db holds what the increment's snapshot held. A kept
// key db does not have, or a full dump, is an error wrapping ErrBadDump.
// Writes are made in batches, not atomically: after a failure or a crash
// db holds part of the change, and applying the increment again finishes
// it (Backup into an existing copy guards this with ErrIncompleteBackup).
func (db *DB) ApplyIncrement(ctx context.Context, r io.Reader) (ExportStats, error) {
	dr, h, err := dump.NewReader(r, dumpLimits)
	if err != nil {
		return ExportStats{}, err
	}
	st := ExportStats{LSN: h.LSN, Since: h.Since}
	if !h.Incremental {
		return st, fmt.Errorf("%w: a full dump (LSN %d) is not an increment: Import makes a database of it", ErrBadDump, h.LSN)
	}
	it, err := db.NewIter(nil) // what db held before: the apply's writes do not move it
	if err != nil {
		return st, err
	}
	defer it.Close()
	b := db.NewBatch()
	pending := 0
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		err := db.Apply(b, &WriteOptions{})
		b.Reset()
		pending = 0
		return err
	}
	add := func(n int) error {
		if pending += n; pending >= importBatchBytes || b.Len() >= MaxBatchOps {
			return flush()
		}
		return nil
	}
	// deleteBelow deletes the copy's keys before key (all, if key is nil).
	valid := it.First()
	deleteBelow := func(key []byte) error {
		for ; valid && (key == nil || bytes.Compare(it.Key(), key) < 0); valid = it.Next() {
			b.Delete(it.Key())
			st.Deleted++
			if err := add(len(it.Key())); err != nil {
				return err
			}
		}
		return it.Error()
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
		if err := deleteBelow(k); err != nil {
			return st, err
		}
		have := valid && bytes.Equal(it.Key(), k)
		if have {
			valid = it.Next()
		}
		st.Entries++
		st.Bytes += int64(len(k) + len(v))
		if dr.Kept() {
			if !have {
				return st, fmt.Errorf("%w: the increment keeps key %q, which this database does not hold: it is not a copy of the export at LSN %d",
					ErrBadDump, k, h.Since)
			}
			st.Kept++
			continue
		}
		b.Put(k, v)
		if err := add(len(k) + len(v)); err != nil {
			return st, err
		}
	}
	if err := deleteBelow(nil); err != nil {
		return st, err
	}
	return st, flush()
}

// writeBackupState writes db's BACKUP file (backupstate.go).
func (db *DB) writeBackupState(s backupState) error {
	if err := writeFileAtomic(db.fs, db.dir, backupFileName, s.encode(db.id)); err != nil {
		return fmt.Errorf("heapkv: write %s: %w", db.fs.PathJoin(db.dir, backupFileName), err)
	}
	return nil
}

// backupIncrement brings the backup in dir up to date (Backup).
func (db *DB) backupIncrement(ctx context.Context, dir string, o Options, eo ExportOptions) (ExportStats, error) {
	s, _, ok, err := readBackupState(o.fs, dir)
	switch {
	case err != nil:
		return ExportStats{}, err
	case !ok:
		return ExportStats{}, errNotABase(dir, "it exists and holds no BACKUP file (Backup makes a new directory, or updates one it made)")
	case s.source != db.id:
		return ExportStats{}, errNotABase(dir, fmt.Sprintf("it is a backup of database %s, this is %s", s.source, db.id))
	case eo.Since != 0 && eo.Since != s.sourceLSN:
		return ExportStats{}, errNotABase(dir, fmt.Sprintf("it holds the state at LSN %d, not %d", s.sourceLSN, eo.Since))
	}
	o.applyingIncrement = true
	o.DiskReserve = -1
	cp, err := Open(dir, &o)
	if err != nil {
		return ExportStats{}, fmt.Errorf("heapkv: backup: open the copy: %w", err)
	}
	st, err := db.applyToCopy(ctx, cp, s, eo)
	if cerr := cp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return st, fmt.Errorf("heapkv: incremental backup to %s: %w", dir, err)
	}
	return st, nil
}

// applyToCopy applies an increment from s.sourceLSN to the open copy cp,
// marking it applying meanwhile.
func (db *DB) applyToCopy(ctx context.Context, cp *DB, s backupState, eo ExportOptions) (ExportStats, error) {
	if s.state == backupComplete && cp.applied.Load() != s.ownLSN {
		return ExportStats{}, errNotABase(cp.dir, fmt.Sprintf("it was written to after the backup (its LSN is %d, was %d)",
			cp.applied.Load(), s.ownLSN))
	}
	if s.state == backupComplete {
		s.state = backupApplying
		if err := cp.writeBackupState(s); err != nil {
			return ExportStats{}, err
		}
	}
	eo.Since = s.sourceLSN
	var st ExportStats
	err := db.exportTo(ctx, eo, func(r io.Reader) error {
		var err error
		st, err = cp.ApplyIncrement(ctx, r)
		return err
	})
	if err == nil {
		err = cp.Sync()
	}
	if err != nil {
		return st, err
	}
	s = backupState{state: backupComplete, source: db.id, sourceLSN: st.LSN, ownLSN: cp.applied.Load()}
	return st, cp.writeBackupState(s)
}
