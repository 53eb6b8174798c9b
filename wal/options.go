package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"

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

// MinSegmentSize is the smallest SegmentSize accepted: a salted segment
// header and one empty record.
const MinSegmentSize = SaltedSegmentHeaderSize + SaltedRecordHeaderSize

// DefaultSpareSegments is the SpareSegments used when Options.SpareSegments
// is 0.
const DefaultSpareSegments = 2

// DefaultBufferSize is the BufferSize used when Options.BufferSize is 0.
const DefaultBufferSize = 64 << 10

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
	// SegmentSize is the size in bytes of a segment file: every segment is
	// created at this size, zero-filled (or recycled), and Append starts a
	// new segment when an Append's records do not fit in the rest of the
	// current one. Only an Append larger than a whole segment makes its
	// (new) segment longer. Default: DefaultSegmentSize (64 MiB); at least
	// MinSegmentSize.
	SegmentSize int64
	// SpareSegments is how many obsolete segments RemoveThrough keeps, as
	// spare files ("<n>.spare"), for later segments to reuse instead of
	// zero-filling new files (see "Segments" in the package documentation).
	// Default (0): DefaultSpareSegments; negative: none, every obsolete
	// segment is deleted. Independently of it, the Log keeps one spare
	// prepared ahead of the next rotation.
	SpareSegments int
	// BufferSize is how many bytes of framed records AppendBuffered
	// collects before it writes them (one write call). Default (0):
	// DefaultBufferSize (64 KiB); negative: AppendBuffered writes every
	// time, as Append does. A larger buffer means fewer write calls and
	// more records a process crash can take.
	BufferSize int
	// Logger receives one-line warnings (torn tails). Default: slog.Default().
	Logger *slog.Logger
	// BeforeSync, if set, is called before every fsync that makes appended
	// records durable: in Sync, in a rotation (by Append or Rotate), in
	// Close, and in Open before it syncs the newest older segment. Use it to
	// make durable first whatever the records point at (heapkv syncs the
	// heap: invariant 1); rotation otherwise syncs records that no Sync call
	// covered. SyncTo does not call it: its caller has made the data of
	// the records through its target durable itself. Calls never overlap
	// each other but may overlap Append; it must not call the Log. An
	// error aborts that fsync and is returned; the Log is not poisoned,
	// since nothing was written. Default: nil.
	BeforeSync func() error

	// noSyncMark makes Open neither create nor update the sync mark file,
	// as logs written before it existed. Tests only (export_test.go): the
	// benchmark measures the mark's cost with it.
	noSyncMark bool
	// fixedSalt, if not 0, is the salt of every new segment instead of a
	// random one. Tests only: it shows what the salt protects against.
	fixedSalt uint64
	// inlinePrepare makes the Log prepare spares inside Append (where the
	// background goroutine would start) instead of in the background.
	// Tests only: it makes the sequence of file operations deterministic.
	inlinePrepare bool
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
	case o.SegmentSize < MinSegmentSize:
		errs = append(errs, fmt.Errorf("Options.SegmentSize %d is below the minimum %d", o.SegmentSize, MinSegmentSize))
	}
	switch {
	case o.SpareSegments == 0:
		o.SpareSegments = DefaultSpareSegments
	case o.SpareSegments < 0:
		o.SpareSegments = 0
	}
	switch {
	case o.BufferSize == 0:
		o.BufferSize = DefaultBufferSize
	case o.BufferSize < 0:
		o.BufferSize = 0
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("wal: invalid options: %w", err)
	}
	return o, nil
}

// newSalt returns the salt of a new segment: random and never 0.
func (o Options) newSalt() uint64 {
	if o.fixedSalt != 0 {
		return o.fixedSalt
	}
	for {
		if s := rand.Uint64(); s != 0 {
			return s
		}
	}
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
