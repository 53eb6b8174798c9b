package heapkv

import (
	"errors"
	"fmt"

	"github.com/heapkv/heapkv/mirror"

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
	// and reopen the database to recover from the log. A write that was
	// already on its way to the log when the database failed (the first to
	// report ErrFailed, typically) may or may not be there after the
	// reopen, as with any write that returns an I/O error; a write that
	// starts after the failure changes nothing.
	ErrFailed = errors.New("heapkv: database failed; reopen to recover")

	// ErrHeapWrite marks a durable write that took effect although one of
	// the heap writes on its way failed: its value was in its log record,
	// and a second write put it in the heap, so the write is durable and
	// readable. It is reported, with the first error wrapped, because a
	// failing write call can be the first sign of a failing disk. If the
	// second write fails too, the database fails (ErrFailed).
	ErrHeapWrite = errors.New("heapkv: a heap write failed and was redone; the write took effect")

	// ErrDiskFull marks a write, checkpoint or open that ran out of space
	// on the file system. An error that wraps it also wraps the operating
	// system's error (errors.Is(err, syscall.ENOSPC)). When the database
	// sees a full disk it releases its space reserve (Options.DiskReserve)
	// and fails (ErrFailed); reopened, it can serve reads, take deletes and
	// checkpoint, which gives the space of deleted values back.
	ErrDiskFull = errors.New("heapkv: disk full")

	// ErrNoReplica is returned (wrapped) when no heap replica can serve a
	// request: a write that every in-sync replica refused, or DetachReplica
	// of the last in-sync replica. It is mirror.ErrNoReplica.
	ErrNoReplica = mirror.ErrNoReplica

	// ErrReadOnly is returned by every write, checkpoint, replica change
	// and scrub of a database opened with Options.ReadOnly, and by Open in
	// read-only mode when the database cannot be opened without writing:
	// it does not exist, or its log holds records after the last
	// checkpoint (a crash; open it read-write once to recover them).
	ErrReadOnly = errors.New("heapkv: database opened read-only")

	// ErrIncompleteBackup is returned by Open for a backup copy whose
	// incremental update (Backup into an existing backup) was interrupted:
	// running that Backup again finishes it.
	ErrIncompleteBackup = errors.New("heapkv: incremental backup not finished")

	// ErrScrubRunning is returned by Scrub while another scrub runs.
	ErrScrubRunning = errors.New("heapkv: a scrub is already running")
)

// Errors of transactions, snapshots and iterators.
var (
	// ErrConflict is returned by Commit when another commit, after this
	// transaction began, wrote a key it writes (or, for a serializable
	// transaction, a key or range it read). Nothing was written; run the
	// transaction again.
	ErrConflict = errors.New("heapkv: transaction conflict")

	// ErrTxnClosed is returned by every method of a transaction after
	// Commit or Rollback (except Rollback, which is then a no-op), and by
	// a transaction's iterators once it ended.
	ErrTxnClosed = errors.New("heapkv: transaction already committed or rolled back")

	// ErrTxnTooLarge is returned by Put or Delete when the write would take
	// the transaction past MaxTxnOps keys or MaxTxnBytes bytes. The write
	// is not buffered; the transaction stays usable.
	ErrTxnTooLarge = errors.New("heapkv: transaction too large")

	// ErrReadOnlyTxn is returned by Put and Delete of a read-only
	// transaction (View, Begin(false)).
	ErrReadOnlyTxn = errors.New("heapkv: write in a read-only transaction")

	// ErrIterClosed is returned by an iterator's methods after its Close.
	ErrIterClosed = errors.New("heapkv: iterator closed")

	// ErrSnapshotClosed is returned by a snapshot's methods after its Close.
	ErrSnapshotClosed = errors.New("heapkv: snapshot closed")
)

// Limits on keys and values.
const (
	// MaxKeySize is the longest key accepted, in bytes.
	MaxKeySize = 64 << 10
	// MaxValueSize is the longest value accepted, in bytes.
	MaxValueSize = 64 << 20
)

// Limits on one Batch (one log record). Values stored in the heap count
// only their pointer towards MaxBatchBytes.
const (
	// MaxBatchOps is the most writes one Batch may hold.
	MaxBatchOps = 100_000
	// MaxBatchBytes bounds the keys and inline values of one Batch.
	MaxBatchBytes = 96 << 20
)

// Limits on one transaction. Its writes are buffered in memory and commit
// as one log record, which must stay below the log's record limit.
const (
	// MaxTxnOps is the most distinct keys one transaction may write.
	MaxTxnOps = 100_000
	// MaxTxnBytes is the most bytes of keys plus values one transaction
	// may buffer (a key written twice counts once, with its last value).
	MaxTxnBytes = 96 << 20
)

// checkKey returns an error wrapping ErrEmptyKey or ErrKeyTooLarge for a
// key outside the limits.
func checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > MaxKeySize:
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrKeyTooLarge, len(key), MaxKeySize)
	}
	return nil
}

// checkPut is checkKey, and an error wrapping ErrValueTooLarge for a value
// longer than MaxValueSize: what every Put (DB, Batch, Txn) accepts.
func checkPut(key, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrValueTooLarge, len(value), MaxValueSize)
	}
	return nil
}
