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
// # Torn tail versus corruption (replay.go, syncmark.go)
//
// After a crash the end of the log may hold any mix of unsynced data:
// missing blocks, zeros, stale bytes, valid records after a hole. Replay
// stops at the first bad record, at expected LSN x, and asks whether x had
// been durable. Two things can say so:
//   - the sync mark: a small file, SYNCED, next to the segments, that
//     records the highest LSN a Sync made durable (see "Sync mark" below).
//     If x <= mark, record x was fsynced and damaged afterwards;
//   - a valid record later in the log whose syncedLSN >= x (each record
//     carries syncedLSN, the highest LSN that was durable when it was
//     written).
//
// If either does, the damage is corruption: an error wrapping ErrCorrupt
// that names the file and offset (and the mark or the vouching record).
// Otherwise x was never acknowledged as durable: a torn tail, and the log
// ends at x-1 (logged as a warning). Valid records after the hole are
// discarded; they were never durable either. The log must also reach the
// mark: a last segment that ends cleanly before it (cut short, or
// truncated to an empty file, or with its header gone) or a newest segment
// that was deleted, so that an older one now ends the log before the mark,
// is corruption naming the LSNs that are missing. Only damage strictly
// past the mark can be a torn tail.
//
// A non-last segment may stop early, at x, when the next segment starts
// at x, and the log continues there: an earlier recovery cut the log at
// x-1 (at a torn tail, or because the Replay callback refused record x
// with ErrStop, e.g. since data it points at never reached the disk) and
// Open started a new segment at x. Whatever the old segment holds from x
// on is superseded, unless a later record in it vouches that x was
// durable. (The mark is not checked there: it may have moved past x
// since, on records in the new segment.)
// Missing or overlapping segments, foreign files, files of another
// database, a damaged sync mark file and torn headers outside the last
// segment are corruption. Replay never writes or deletes; segments are
// replaced only by Open and deleted only by RemoveThrough.
//
// ProvenDurable returns the highest LSN the log proves was durable: the
// larger of the mark and the highest synced stamp a valid record carries.
// A caller checks the records above it (say, that their data reached the
// disk) before trusting them, and may refuse one with ErrStop; refusing a
// record at or below the mark is corruption.
//
// # Sync mark (syncmark.go)
//
// The mark lives outside the segments because the newest synced records
// have no later record to vouch for them: without it, damage to them looks
// like a torn tail and an acknowledged write is rolled back in silence. It
// is a fixed-size file (filehdr kind "SM", carrying the database ID) with
// two slots in different 4 KiB pages, each holding a CRC-32C, a sequence
// number and a synced LSN; updates alternate between the slots, so a torn
// update loses at most itself and the reader falls back to the other
// slot, the previous mark. The file is created once (written to a
// temporary file, fsynced, renamed, directory synced, so a crash leaves no
// file or a whole one) and from then on only overwritten in place: an
// update is a pwrite of one slot and an fdatasync, with no metadata to
// commit. A log without the file (written before it existed) has mark 0,
// the older rules, and Open creates it; so a deleted file cannot be told
// from an old log and protects nothing until the next Open. A file
// damaged in both slots, of the wrong size or of another database is
// corruption. A damaged newer slot is taken for a torn update: the mark
// then falls back by one sync.
//
// The mark is written after the segment fsync returned and before Sync
// returns, so it never claims a record that is not durable (and can never
// make Replay report corruption after a genuine crash), and every record
// whose Sync returned is at or below it. It is an LSN, not a file offset,
// so it keeps working unchanged with recycled or preallocated segments.
// Checkpoints may delete the segment holding the marked LSN
// (RemoveThrough): that is fine, since the current segment is never
// deleted and reaches the mark, and Replay(after) of a log whose
// directory holds no segment accepts any mark <= after.
//
// # Durability
//
// Append writes; it does not sync. A record is durable once Sync (or
// Rotate, or Close) returns after it was appended; SyncedLSN reports the
// watermark. Each of them, whenever it advances the watermark, fsyncs the
// segment, then updates the sync mark (one more small fdatasync, of an
// already-allocated block), then raises SyncedLSN; a Sync with nothing new
// to sync does no I/O at all. So a synced group costs exactly two
// fdatasync-class calls instead of one. (A later pipelined syncer can let
// the mark of one group ride along with the next group's flush.) Rotation
// updates the mark too, although the new segment already proves the old
// one was synced: a Sync that finds its records synced by a rotation
// returns at once, and its caller's records must be covered as well (it
// costs one small fdatasync per rotation).
//
// Rotation syncs the old segment on its own, so records can become
// durable without a Sync call: Options.BeforeSync runs before every such
// fsync, for a caller whose records point at data that must be durable
// first (heapkv's heap, invariant 1). Open syncs the newest older segment
// before it writes anything, so records that Replay returned are durable
// before new records vouch for them, and once its new segment exists it
// sets the mark to next-1 (it refuses to open below an existing mark,
// which would cut off durable records); SyncAll syncs every segment, for
// a recovery that must make what it found durable before replaying.
// After any write or sync error the Log is poisoned: further Append and
// Sync calls return that error and SyncedLSN never moves again (after a
// failed fsync the kernel may have dropped the dirty pages, so retrying
// could falsely succeed). A failed mark update poisons it the same way,
// since whether the mark reached the disk is unknown. Recover by
// reopening.
//
// # Concurrency
//
// Append calls must be serialized by the caller (one commit leader); Sync
// may run on any goroutine at the same time (for example from a Pebble
// flush hook) and does not wait for Append's write, nor Append for Sync's
// fsync: the segment is written through one handle and fsynced through
// another. The sync mark is updated only under the lock that serializes
// fsyncs (Sync, rotation, Close), so its updates never overlap and its
// slots strictly alternate. NextLSN, SyncedLSN and Stats are safe
// everywhere. Replay must not run on a directory that a Log is appending
// to.
//
// # Reading the source
//
// frame.go (record framing), segment.go (segment files), syncmark.go (the
// sync mark file), replay.go (Replay, ProvenDurable), log.go (Open, Append,
// Sync, rotation), options.go (LSN, errors, Options), syncall.go (SyncAll).
package wal
