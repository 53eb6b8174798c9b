package base

import (
	"strconv"
	"sync/atomic"
)

// LSN is a log sequence number. LSNs are dense and monotonic: the first
// record of a log is LSN 1 and every record is one more than the one before.
// LSN 0 names no record: it means "none", or the position before the first
// record (replaying after LSN 0 replays the whole log).
type LSN uint64

// String formats the LSN as a decimal number.
func (l LSN) String() string { return strconv.FormatUint(uint64(l), 10) }

// AtomicLSN is an LSN that is loaded and stored atomically. Its zero value
// is LSN 0.
type AtomicLSN struct{ v atomic.Uint64 }

// Load returns the LSN.
func (a *AtomicLSN) Load() LSN { return LSN(a.v.Load()) }

// Store sets the LSN.
func (a *AtomicLSN) Store(l LSN) { a.v.Store(uint64(l)) }

// CompareAndSwap stores new if the LSN is old, and reports whether it did.
func (a *AtomicLSN) CompareAndSwap(old, new LSN) bool {
	return a.v.CompareAndSwap(uint64(old), uint64(new))
}
