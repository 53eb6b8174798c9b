// Package wal is heapkv's write-ahead log: the redo record of every change,
// ordered by log sequence numbers (LSNs). It knows nothing of what the
// records mean; payloads are opaque bytes.
//
// # Model
//
// A log is a directory of segment files. Every record has an LSN; LSNs are
// dense and monotonic (the first record is LSN 1, each next record is one
// more). Recovery calls Replay to read the records after the last
// checkpoint, then Open(last+1) to start a new segment and append. All I/O
// goes through a vfs.FS (github.com/cockroachdb/pebble/v2/vfs), so tests run
// on vfs.NewCrashableMem and errorfs.
//
// # Framing (frame.go)
//
// A record is
//
//	crc32c u32 | payloadLen u32 | lsn u64 | syncedLSN u64 | payload
//
// little endian, with the CRC-32C (Castagnoli) over everything after the
// crc field. AppendRecord encodes; DecodeRecord (over []byte) and Decoder
// (over an io.Reader) decode and tell apart a clean end (io.EOF), a bad
// record (errors.Is(err, ErrBadRecord), with its offset) and an I/O error.
// A length above MaxPayloadSize, or an all-zero header, is a bad record.
//
// # Segments (segment.go)
//
// A segment is named "<first LSN as 20 decimal digits>.log" and starts with
// an internal/filehdr header (kind "WL", database ID) and a 16-byte segment
// header holding its first LSN; records follow back to back. Append rotates
// to a new segment when the current one exceeds Options.SegmentSize; the
// old segment is synced before the new one is created, so only the last
// segment can end in unsynced data.
//
// # Torn tail versus corruption (replay.go)
//
// Each record carries syncedLSN, the highest LSN that was durable when it
// was written. After a crash the end of the log may hold any mix of
// unsynced data: missing blocks, zeros, stale bytes, valid records after a
// hole. Replay stops at the first bad record, at expected LSN x, and asks
// whether x had been durable:
//   - if a valid record later in the log carries syncedLSN >= x, x was
//     fsynced and damaged afterwards: corruption, an error wrapping
//     ErrCorrupt that names the file and offset;
//   - otherwise x was never acknowledged as durable: a torn tail, and the
//     log ends at x-1 (logged as a warning). Valid records after the hole
//     are discarded; they were never durable either.
//
// A non-last segment may stop early, at x, when the next segment starts at
// x, and the log continues there: an earlier recovery cut the log at x-1 (at a torn tail, or
// because the Replay callback refused record x with ErrStop, e.g. since
// data it points at never reached the disk) and Open started a new segment
// at x. Whatever the old segment holds from x on is superseded, unless a
// later record in it vouches that x was durable. Missing or overlapping
// segments, foreign files, files of another database and torn headers
// outside the last segment are corruption. Replay never writes or deletes;
// segments are replaced only by Open and deleted only by RemoveThrough.
//
// Damage to the newest records that no later record vouches for cannot be
// told from a torn tail; such records are dropped like unsynced ones. Every
// record the log has acknowledged as durable and that is followed by a
// record written after the acknowledgement is protected. ProvenDurable
// returns the highest LSN so vouched for, so a caller can check the records
// above it (say, that their data reached the disk) before trusting them.
//
// # Durability
//
// Append writes; it does not sync. A record is durable once Sync (or
// Rotate, or Close) returns after it was appended; SyncedLSN reports the
// watermark. Rotation syncs the old segment on its own, so records can
// become durable without a Sync call: Options.BeforeSync runs before every
// such fsync, for a caller whose records point at data that must be
// durable first (heapkv's heap, invariant 1). Open syncs the newest older
// segment before it writes anything, so records that Replay returned are
// durable before new records vouch for them; SyncAll syncs every segment,
// for a recovery that must make what it found durable before replaying.
// After any write or sync error the Log is poisoned: further Append and
// Sync calls return that error and SyncedLSN never moves again (after a
// failed fsync the kernel may have dropped the dirty pages, so retrying
// could falsely succeed). Recover by reopening.
//
// # Concurrency
//
// Append calls must be serialized by the caller (one commit leader); Sync
// may run on any goroutine at the same time (for example from a Pebble
// flush hook) and does not wait for Append's write, nor Append for Sync's
// fsync: the segment is written through one handle and fsynced through
// another. NextLSN, SyncedLSN and Stats are safe everywhere. Replay must not
// run on a directory that a Log is appending to.
//
// # Reading the source
//
// frame.go (record framing), segment.go (segment files), replay.go
// (Replay, ProvenDurable), log.go (Open, Append, Sync, rotation), options.go
// (LSN, errors, Options), syncall.go (SyncAll).
package wal
