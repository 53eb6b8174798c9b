package wal

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
)

// LSN is a log sequence number (base.LSN, shared by every layer). LSNs are
// dense and monotonic: the first record of a log is LSN 1 and every record
// is one more than the last.
type LSN = base.LSN

// InvalidLSN is the zero LSN; no record has it. Replay(after=InvalidLSN)
// replays the whole log.
const InvalidLSN LSN = 0

// Errors. Every error that reports damage on disk wraps ErrCorrupt and names
// the file (and offset where there is one); ErrCorrupt is marked with
// base.MarkCorrupt, so those errors also satisfy errors.Is(err,
// base.ErrCorrupt).
var (
	// ErrCorrupt is wrapped by every error Replay or Open returns for damage
	// that is not a torn tail: a bad record that a later record proves was
	// durable, a bad record in the middle of a non-last segment, a missing or
	// overlapping segment, a foreign file or one of another database.
	ErrCorrupt = base.MarkCorrupt(errors.New("wal: corrupt log"))

	// ErrStop, returned (possibly wrapped) by a Replay callback, ends the
	// log before the record it was given: a caller that finds a record's
	// effects incomplete (say, data the record points at that never reached
	// the disk) treats that record as the start of a torn tail. Replay then
	// returns the LSN before it and no error; the caller's Open(last+1)
	// supersedes the rest. Refusing a record that the log shows was durable
	// is corruption instead.
	ErrStop = errors.New("wal: stop replay here")

	// ErrClosed is returned by every method of a Log after Close.
	ErrClosed = errors.New("wal: log closed")

	// ErrRecordTooLarge is returned by Append for a payload longer than
	// MaxPayloadSize; nothing is written and the Log stays usable.
	ErrRecordTooLarge = errors.New("wal: record too large")
)

// DefaultSegmentSize is the SegmentSize used when Options.SegmentSize is 0.
const DefaultSegmentSize = 64 << 20

// Options configures Replay and Open. The zero value of every field except
// Dir means its default; the caller's struct is never modified.
type Options struct {
	// FS is the file system for all I/O. Default: vfs.Default.
	FS vfs.FS
	// Dir is the directory holding the segments; Open creates it if absent.
	// Required.
	Dir string
	// DBID is the database ID every segment header must carry. The zero ID
	// accepts segments of any database (and writes a zero ID).
	DBID filehdr.DBID
	// SegmentSize is the size in bytes above which Append starts a new
	// segment. Default: DefaultSegmentSize (64 MiB). Segments may exceed it
	// by one Append's worth of records.
	SegmentSize int64
	// Logger receives one-line warnings (torn tails). Default: slog.Default().
	Logger *slog.Logger
	// BeforeSync, if set, is called before every fsync that makes appended
	// records durable: in Sync, in a rotation (by Append or Rotate), in
	// Close, and in Open before it syncs the newest older segment. Use it to
	// make durable first whatever the records point at (heapkv syncs the
	// heap: invariant 1); rotation otherwise syncs records that no Sync call
	// covered. Calls never overlap each other but may overlap Append; it
	// must not call the Log. An error aborts that fsync and is returned; the
	// Log is not poisoned, since nothing was written. Default: nil.
	BeforeSync func() error

	// noSyncMark makes Open neither create nor update the sync mark file,
	// as logs written before it existed. Tests only (export_test.go): the
	// benchmark measures the mark's cost with it.
	noSyncMark bool
}

// withDefaults returns a copy of o with defaults filled in, or an error
// listing every invalid field.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Dir == "" {
		errs = append(errs, errors.New("Options.Dir is empty"))
	}
	switch {
	case o.SegmentSize == 0:
		o.SegmentSize = DefaultSegmentSize
	case o.SegmentSize < 0:
		errs = append(errs, fmt.Errorf("Options.SegmentSize %d is negative", o.SegmentSize))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("wal: invalid options: %w", err)
	}
	return o, nil
}

// beforeSync runs the BeforeSync hook, if any.
func (o Options) beforeSync() error {
	if o.BeforeSync == nil {
		return nil
	}
	if err := o.BeforeSync(); err != nil {
		return fmt.Errorf("wal: BeforeSync: %w", err)
	}
	return nil
}
