package base

import "strconv"

// LSN is a log sequence number. LSNs are dense and monotonic: the first
// record of a log is LSN 1 and every record is one more than the one before.
// LSN 0 names no record: it means "none", or the position before the first
// record (replaying after LSN 0 replays the whole log).
type LSN uint64

// String formats the LSN as a decimal number.
func (l LSN) String() string { return strconv.FormatUint(uint64(l), 10) }
