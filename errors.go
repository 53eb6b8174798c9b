package heapkv

import (
	"errors"

	"github.com/heapkv/heapkv/internal/base"
)

// Sentinel errors. Every error heapkv returns that has one of these causes
// wraps the sentinel, so callers test with errors.Is; the wrapping text says
// what failed and where.
var (
	// ErrNotFound is returned by Get when the key has no value.
	ErrNotFound = errors.New("heapkv: not found")

	// ErrEmptyKey is returned by writes and reads given a zero-length key.
	ErrEmptyKey = errors.New("heapkv: empty key")

	// ErrKeyTooLarge is returned for keys longer than MaxKeySize.
	ErrKeyTooLarge = errors.New("heapkv: key too large")

	// ErrValueTooLarge is returned for values longer than MaxValueSize.
	ErrValueTooLarge = errors.New("heapkv: value too large")

	// ErrBatchTooLarge is returned by Apply for a batch of more than
	// MaxBatchOps writes or MaxBatchBytes of keys and inline values: its
	// log record would exceed what the log accepts.
	ErrBatchTooLarge = errors.New("heapkv: batch too large")

	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("heapkv: database closed")

	// ErrCorrupt marks damage found on disk: a bad checksum, a foreign or
	// truncated file, an index entry that does not decode. The wrapping text
	// names the file, key or extent. It is internal/base's marker, which
	// every package's corruption error carries (the log's, the allocator's,
	// the heap replicas', the file headers'), so errors.Is(err, ErrCorrupt)
	// holds for corruption found at any layer.
	ErrCorrupt = base.ErrCorrupt

	// ErrLocked is returned by Open when another handle, in this process or
	// another, holds the database directory, and only then: a directory
	// Open cannot use for another reason (no permission, a read-only file
	// system, not a directory) gives an error wrapping the operating
	// system's, so a caller that retries on ErrLocked does not retry forever.
	ErrLocked = errors.New("heapkv: database is locked")

	// ErrInvalidOptions is returned by Open when Options fail validation; the
	// text lists every violation.
	ErrInvalidOptions = errors.New("heapkv: invalid options")

	// ErrFailed is returned by writes after an I/O error left the log or the
	// heap in a state the database cannot vouch for. Reads still work; close
	// and reopen the database to recover from the log.
	ErrFailed = errors.New("heapkv: database failed; reopen to recover")

	// ErrDiskFull marks a write, checkpoint or open that ran out of space
	// on the file system. An error that wraps it also wraps the operating
	// system's error (errors.Is(err, syscall.ENOSPC)). When the database
	// sees a full disk it releases its space reserve (Options.DiskReserve)
	// and fails (ErrFailed); reopened, it can serve reads, take deletes and
	// checkpoint, which gives the space of deleted values back.
	ErrDiskFull = errors.New("heapkv: disk full")
)
