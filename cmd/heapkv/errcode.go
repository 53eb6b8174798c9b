package main

import (
	"context"
	"errors"
	"io/fs"

	"github.com/heapkv/heapkv"
)

// Error codes. In --json mode a failed statement's object carries "code",
// a stable snake_case name of the kind of failure, beside the message
// ("error"), so that a script can act on it without matching text. The
// library's sentinels map one to one; the shell adds its own for its
// syntax and usage errors. A new sentinel gets a new code; codes are never
// renamed.

// codedError gives an error of the shell's own a code.
type codedError struct {
	error
	code string
}

func (e codedError) Unwrap() error { return e.error }

// withCode marks err with code; nil stays nil.
func withCode(err error, code string) error {
	if err == nil {
		return nil
	}
	return codedError{err, code}
}

var errorCodes = []struct {
	err  error
	code string
}{
	{heapkv.ErrNotFound, "not_found"},
	{heapkv.ErrEmptyKey, "empty_key"},
	{heapkv.ErrKeyTooLarge, "key_too_large"},
	{heapkv.ErrValueTooLarge, "value_too_large"},
	{heapkv.ErrBatchTooLarge, "batch_too_large"},
	{heapkv.ErrTxnTooLarge, "txn_too_large"},
	{heapkv.ErrConflict, "conflict"},
	{heapkv.ErrTxnClosed, "txn_closed"},
	{heapkv.ErrReadOnlyTxn, "read_only_txn"},
	{heapkv.ErrReadOnly, "read_only"},
	{heapkv.ErrLocked, "locked"},
	{heapkv.ErrClosed, "closed"},
	{heapkv.ErrFailed, "failed"},
	{heapkv.ErrDiskFull, "disk_full"},
	{heapkv.ErrCorrupt, "corrupt"},
	{heapkv.ErrNoReplica, "no_replica"},
	{heapkv.ErrBadDump, "bad_dump"},
	{heapkv.ErrIncompleteBackup, "incomplete_backup"},
	{heapkv.ErrScrubRunning, "scrub_running"},
	{heapkv.ErrInvalidOptions, "invalid_options"},
	{errInternal, "internal"},
	{context.Canceled, "cancelled"},
	{fs.ErrNotExist, "not_exist"},
	{fs.ErrExist, "exists"},
	{fs.ErrPermission, "permission"},
}

// errCode returns err's code: the shell's own, a sentinel's, or "error".
func errCode(err error) string {
	var ce codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	var pe *parseError
	if errors.As(err, &pe) {
		return "syntax"
	}
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "error"
}
