// Package heapkv is an embedded key-value database for values larger than a
// few hundred bytes.
//
// Keys live in a Pebble LSM. Values above Options.InlineThreshold live in a
// block heap: a file of fixed-size segments of fixed-size blocks, handed out
// through per-writer segment bitmaps so concurrent writers never share an
// allocator lock. Overwriting or deleting a value gives its blocks back as
// soon as no reader can see them: there is no garbage collection to run and
// no value log to compact. heapkv's own write-ahead log gives every change a
// log sequence number (LSN) and is the redo record for crash recovery.
//
// # What it offers
//
// Put, Get, Delete and atomic batches (Apply); optimistic transactions
// (Update, View, Begin) with snapshot isolation or, optionally,
// serializability; snapshots; ordered, bounded iterators that read heap
// values lazily; reads of heap values through a memory map of the heap (a
// fault on a mapped page, such as a disk error, falls back to pread and
// read repair), an index-entry cache for hot keys, a value cache and
// per-value s2/zstd compression; and a heap mirrored onto several replica
// directories (Options.Mirrors), brought back up to date after an outage by
// copying only the blocks that changed, with reads that repair a bad copy
// from a good one and a Scrub that checks them all. Check proves the
// allocation invariants; Stats reports the numbers (packages promstats and
// expvarstats export them).
//
// # Operating it
//
// Options.ReadOnly opens a database without writing to it, beside other
// read-only handles. Backup copies the database, as of one moment, into a
// new directory while writers go on; run again into the same directory, it
// copies only the values written since. Export and Import move the data
// through a versioned, checksummed stream, whole or as an increment
// (ExportOptions.Since, ApplyIncrement). Compact gives the disk space of
// deleted values back to the file system. DeleteRange, DropPrefix and
// Increment are the bulk deletes and counters the peers have.
//
// # Durability
//
// By default every acknowledged write is durable: Put returns after the log
// record of the write has been flushed to disk, and with it the value:
// the heap values of a commit group of up to Options.CarryLimit bytes, or
// of any group of values up to 8 KiB, travel in its records (their heap
// blocks are flushed by the next checkpoint, and recovery rewrites them
// from the log); a larger group has its heap blocks flushed before its
// records. Concurrent writers share those flushes through group commit.
// With Options.NoSync (or WriteOptions{Sync: false}) writes return once
// their log records are in a buffer in memory, which a background
// goroutine hands to the operating system within Options.NoSyncWriteDelay
// (2 ms), or sooner when it fills (64 KiB) or a durable write's flush
// comes; they become durable at the next Sync,
// Checkpoint or Close, in a background flush once Options.NoSyncFlushBytes
// of them have built up, about once a second in the background, and
// before the index flushes. After a crash the database holds exactly the
// writes of some prefix of the commit order that includes every
// acknowledged durable write; a crash of the process alone loses at most
// the unsynced writes of about the last NoSyncWriteDelay.
//
// # Concurrency and ownership
//
// A DB is safe for concurrent use. Get returns a fresh copy of the value;
// Put, Delete and Batch copy their arguments, so callers may reuse buffers.
// A directory may be opened by one read-write handle at a time, or by any
// number of read-only ones (ErrLocked otherwise).
//
// # Errors
//
// Errors wrap the sentinels in errors.go; test them with errors.Is. Damage
// found on disk wraps ErrCorrupt and names the file, key or extent; nothing
// panics on a corrupt file or bad input.
package heapkv
