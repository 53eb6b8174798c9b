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
// A record of the current format (a salted frame) is
//
//	crc32c u32 | payloadLen u32 | lsn u64 | syncedLSN u64 | salt u64 | payload
//
// little endian, with the CRC-32C (Castagnoli) over everything after the
// crc field. salt is that of the segment the record belongs to (see
// below). AppendSaltedRecord encodes and DecodeSaltedRecord decodes one;
// AppendRecord, DecodeRecord and Decoder do the same for the plain frames
// of format 0 segments (the same without the salt). The decoders tell
// apart a clean end (io.EOF), a bad record (errors.Is(err, ErrBadRecord),
// with its offset) and an I/O error. A length above MaxPayloadSize, an
// all-zero header or (salted) another salt is a bad record.
//
// # Segments (segment.go, spare.go)
//
// A segment is named "<first LSN as 20 decimal digits>.log" and starts with
// an internal/filehdr header (kind "WL", database ID) and a segment header
// holding a format number, its first LSN and, in format 1, its salt;
// records follow back to back. Format 1 is what this version writes; it
// reads format 0 segments (plain frames, written by earlier versions) as
// before, so a log may hold both, older ones first.
//
// A format 1 segment is preallocated: its file is Options.SegmentSize
// bytes long, every byte written and synced before it became a segment,
// and records overwrite those blocks. Flushing them is an fdatasync that
// commits no file system metadata (no allocation, no size change): one
// device flush per synced group. Append rotates to a new segment when an
// Append's records do not fit in the rest of the current one; the old
// segment is flushed before the new one is made, so only the last segment
// can end in unsynced data. Only an Append larger than a whole segment
// goes past the end of its (new, otherwise empty) segment: the file grows,
// and the flush that makes those records durable is a full fsync, which
// commits the new size (Stats.FullSyncs counts them).
//
// New segments are made from spare files ("<n>.spare", never read by
// Replay): a rotation writes a new header into a spare, fdatasyncs it,
// renames it and syncs the directory, instead of zero-filling SegmentSize
// bytes. Spares come from RemoveThrough, which keeps up to
// Options.SpareSegments obsolete segments (default 2) as spares instead of
// deleting them, as Pebble recycles its WAL files; and from a background
// goroutine that zero-fills a new one when the pool is empty and the current
// segment passes half full, so that one is ready when the segment fills.
// Open takes a spare it finds in the directory, or zero-fills one inline, as
// does a rotation that finds none ready and none in the making (Rotate of a
// segment less than half full). Open deletes spares of another size and
// leftovers of interrupted preparations ("<n>.spare.tmp"). The log's files
// hold up to SpareSegments+1 segments' worth of spares besides the segments;
// ReleaseSpares deletes the pool, for a caller that finds the file system
// full. spare.go describes the crash-safe order of these steps.
//
// A new use of a file gets a new random salt. A recycled file still holds
// the frames of its earlier use behind the new records, among them, if a
// recovery cut that use short (a torn tail, ErrStop), records whose LSNs
// were given out again later: their salt is the old one, so they fail as
// records of the new segment even where their LSNs would continue the log.
// The records of a format 1 segment end at the first offset where no valid
// record of its own starts and nothing after it bears its salt (zeros, stale
// frames of earlier uses): that is the normal end of the data, as the end of
// the file is for a format 0 segment, not damage, and Replay logs nothing. A
// torn record, or valid records after a hole, leave the salt behind: that is
// a torn tail (below).
//
// # Torn tail versus corruption (replay.go, syncmark.go)
//
// After a crash the end of the log may hold any mix of unsynced data:
// missing blocks, zeros, stale bytes, valid records after a hole. Replay
// stops at the first bad record, at expected LSN x, and, unless that is the
// normal end of a format 1 segment's records (see "Segments"), asks whether
// x had been durable. Two things can say so:
//   - the sync mark: a small file, SYNCED, next to the segments, that
//     records an LSN a flush made durable (see "Sync mark" below). If x <=
//     mark, record x was fsynced and damaged afterwards;
//   - a valid record later in the log whose syncedLSN >= x (each record
//     carries syncedLSN, the highest LSN that was durable when it was
//     written).
//
// If either does, the damage is corruption: an error wrapping ErrCorrupt
// that names the file and offset (and the mark or the vouching record).
// Otherwise x was never acknowledged as durable: a torn tail, and the log
// ends at x-1 (logged as a warning). Valid records after the hole are
// discarded; they were never durable either. The log must also reach the
// mark: a last segment that ends cleanly before it (cut short, zeroed,
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
// since, on records in the new segment.) Records of a format 1 segment
// that end normally at x where the next segment starts at x are simply
// the end of that segment; a cut is logged only when the segment's own
// records go on past it.
// Missing or overlapping segments, foreign files, files of another
// database, an unknown segment format, a damaged sync mark file and torn
// headers outside the last segment are corruption. Replay never writes or
// deletes; segments are replaced only by Open and turned into spares or
// deleted only by RemoveThrough, and spares are deleted only by Open.
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
// The mark is only ever written after the segment flush that made its LSN
// durable returned, so it never claims a record that is not durable (and
// can never make Replay report corruption after a genuine crash): mark <=
// SyncedLSN at all times. It is an LSN, not a file offset, so recycled and
// preallocated segments do not affect it. Checkpoints may delete the
// segment holding the marked LSN (RemoveThrough): that is fine, since the
// current segment is never deleted and reaches the mark, and Replay(after)
// of a log whose directory holds no segment accepts any mark <= after.
//
// The mark may lag SyncedLSN. Sync, rotation, Close and Open bring it up
// to date (Sync costs a second flush for it); SyncTo leaves it where it
// is, and SyncMark brings it up to SyncedLSN (one pwrite and fdatasync of
// the mark file, nothing if it is up to date). A caller that syncs every
// group with SyncTo calls SyncMark when the log goes idle, when no group
// waits for the flush. While the log is busy the mark rides along in the
// records instead: every record carries the synced LSN of its time, so
// once a record framed after SyncTo(t) returned is durable itself (the
// next group's flush), it vouches for everything through t, exactly as
// the mark would (VouchedLSN tracks it).
//
// # Buffered appends (append.go)
//
// AppendBuffered frames records as Append does (LSNs, synced stamps and
// the current segment's salt are fixed at that moment) but only into a
// buffer in memory, for a caller that does not need its records written
// at once (heapkv's NoSync writes): many small records then cost one
// write call. The buffer holds the records from WrittenLSN()+1 to
// NextLSN()-1 and is written, with one write call at the current
// segment's end, when
//   - it reaches Options.BufferSize bytes (default 64 KiB), by the
//     AppendBuffered that filled it;
//   - an Append frames its own records behind it and writes both with one
//     call (so a synced group takes the buffered records along);
//   - WriteBuffered is called (heapkv calls it from a background goroutine
//     a few milliseconds after the buffer fills up);
//   - a flush must cover one of its records: SyncTo with a target in the
//     buffer and Sync write it before they flush, so a flush never claims
//     a record it did not write;
//   - the records do not fit in the rest of the current segment behind
//     it, Rotate, or Close: the buffer goes into the current segment
//     (whose salt its frames carry, and which it fits) before the segment
//     is flushed and the next one started.
//
// RemoveThrough never touches the current segment, so it has nothing to
// do with the buffer. A failed write of the buffer poisons the Log as a
// failed Append does (its LSNs were given out).
//
// # Durability
//
// Append writes; it does not sync. AppendBuffered does not even write:
// a process crash (the operating system keeps running and keeps every
// write that returned) loses exactly the buffered records, the newest
// ones, at most Options.BufferSize bytes plus the last AppendBuffered's,
// and nothing before them; a machine crash may lose any unsynced suffix
// besides (a torn tail). Either way, what survives is a prefix of the
// LSNs, and every record through SyncedLSN survives. A record is durable once SyncTo with a
// target at or above it, Sync, Rotate or Close returns after it was
// appended; SyncedLSN reports the watermark. SyncTo(t) flushes the
// current segment (one fdatasync) and raises SyncedLSN to t, not further,
// even though the flush may have covered records appended meanwhile: a
// caller whose records point at other data (heapkv's heap) must not see
// records claimed durable before that data is. A SyncTo with nothing new
// to flush does no I/O, nor does a Sync unless the mark lags. So a synced
// group costs exactly one device flush with SyncTo (Sync costs two, its
// own and the mark's).
//
// What protects a durable record against being taken for a torn tail
// after a crash, if it is damaged (a lost, zeroed or torn write of the
// device, a truncated or deleted newest segment), is the mark or a
// durable record vouching for it; ProvenDurable is the larger of the two.
// With SyncTo, records through t are
//   - durable when SyncTo(t) returns: a crash alone never loses them;
//   - protected against damage once the mark reaches t (the next SyncMark,
//     Sync, rotation or Close), or once a record framed after SyncTo(t)
//     returned is durable (the flush of a later group: stamps of records
//     framed while SyncTo(t) ran still carry the previous watermark).
//
// Between the two, the newest synced records (those above
// max(MarkLSN, VouchedLSN)) are the window: if a crash also damages them,
// Replay reads the damage as a torn tail and ends the log before them (with
// a warning) instead of returning ErrCorrupt. Under load the window is one
// or two groups; when the log is idle, SyncMark closes it. Damage at or
// below the mark, or to a record a later durable record vouches for, is
// always ErrCorrupt, and so is a log that ends before the mark.
//
// Rotation syncs the old segment on its own, so records can become
// durable without a SyncTo or Sync call: Options.BeforeSync runs before
// every such flush (and before Sync's and Close's), for a caller whose
// records point at data that must be durable first (heapkv's heap,
// invariant 1); SyncTo leaves that to its caller. Open syncs the newest
// older segment before it writes anything, so records that Replay returned
// are durable before new records vouch for them, and once its new segment
// exists it sets the mark to next-1 (it refuses to open below an existing
// mark, which would cut off durable records); SyncAll syncs every segment,
// for a recovery that must make what it found durable before replaying.
// After any write or flush error the Log is poisoned: further Append and
// sync calls return that error and SyncedLSN never moves again (after a
// failed fsync the kernel may have dropped the dirty pages, so retrying
// could falsely succeed). A failed mark update poisons it the same way,
// since whether the mark reached the disk is unknown (the records its
// segment flush made durable stay counted in SyncedLSN). Recover by
// reopening.
//
// # Concurrency
//
// Append and AppendBuffered calls must be serialized by the caller (one
// commit leader); WriteBuffered, SyncTo, Sync and SyncMark may run on any
// goroutine at the same time (for example heapkv's log writer and syncer,
// or a Pebble flush hook), and neither side waits for the other's flush:
// the segment is written through one handle and flushed through another,
// a write of records holds only appendMu (which guards the buffer) and the
// flushes hold only syncMu across theirs. A SyncTo or Sync that must write
// the buffer takes appendMu for that write first, and releases it before
// it flushes, so it may wait for one write call of an Append. A rotation
// inside Append takes syncMu too, so it waits for a flush in progress. The mark is
// updated only under syncMu, so its updates never overlap and its slots
// strictly alternate. The spare preparation goroutine touches only its own
// file and, under the Log's mutex, the spare pool; Close stops it.
// NextLSN, WrittenLSN, SyncedLSN, VouchedLSN, MarkLSN and Stats are safe everywhere.
// Replay must not run on a directory that a Log is appending to.
//
// # Reading the source
//
// frame.go (record framing), segment.go (segment files), syncmark.go (the
// sync mark file), replay.go (Replay, ProvenDurable), log.go (Open, Close,
// Stats), append.go (Append, AppendBuffered, the buffer, rotation), flush.go (SyncTo, Sync, SyncMark), spare.go (spare
// files: preparation, recycling, RemoveThrough), options.go (LSN, errors,
// Options), syncall.go (SyncAll).
package wal
