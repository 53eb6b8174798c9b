package base

import (
	"errors"
	"fmt"
)

// ErrCorrupt marks damage found on disk: a bad checksum, a foreign,
// truncated or inconsistent file, a record that contradicts the state it
// applies to. Every error of any heapkv package that reports such damage
// satisfies errors.Is(err, ErrCorrupt); its text says what and where.
var ErrCorrupt = errors.New("heapkv: corruption")

// corruptError is an error marked as corruption. Its text is that of the
// error it marks; it unwraps to both that error and ErrCorrupt.
type corruptError struct{ err error }

func (e *corruptError) Error() string   { return e.err.Error() }
func (e *corruptError) Unwrap() []error { return []error{e.err, ErrCorrupt} }

// MarkCorrupt returns err marked as corruption: an error with err's text
// for which errors.Is(x, ErrCorrupt) holds, as does errors.Is(x, target)
// (and errors.As) for err and everything err wraps. It returns err itself
// if err is nil or already marked.
func MarkCorrupt(err error) error {
	if err == nil || errors.Is(err, ErrCorrupt) {
		return err
	}
	return &corruptError{err: err}
}

// CorruptErrorf formats an error as fmt.Errorf does (%w wraps) and marks
// it as corruption.
func CorruptErrorf(format string, args ...any) error {
	return MarkCorrupt(fmt.Errorf(format, args...))
}

// IsCorrupt reports whether err is marked as corruption:
// errors.Is(err, ErrCorrupt).
func IsCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }
