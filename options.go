package heapkv

import (
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/alloc"
)

// Defaults used for zero Options fields. ARCHITECTURE.md explains how each
// was chosen.
const (
	DefaultBlockSize          = 128
	DefaultSegmentSize        = 8 << 20
	DefaultInlineThreshold    = 256
	DefaultLogSegmentSize     = 16 << 20
	DefaultCheckpointLogBytes = 64 << 20
	DefaultIndexCacheSize     = 128 << 20
	DefaultIndexMemTableSize  = 8 << 20
	DefaultNoSyncFlushBytes   = 16 << 20
	DefaultValueCacheSize     = 64 << 20
	DefaultEntryCacheSize     = 32 << 20
	DefaultCarryLimit         = 64 << 10
	DefaultNoSyncWriteDelay   = 2 * time.Millisecond
)

// testLogSegmentSize, if not 0, replaces DefaultLogSegmentSize as the
// default. The package's tests set it (testmain_test.go): they open
// hundreds of databases, and each would zero-fill 16 MiB log segments.
var testLogSegmentSize int64

// Options configure a database. A nil *Options means all defaults; a zero
// field means that field's default. Open never modifies the caller's struct.
type Options struct {
	// NoSync makes writes return before they are durable. Their log
	// records are collected in a buffer in memory (64 KiB) that a
	// background goroutine writes to the log file at most NoSyncWriteDelay
	// after it stops being empty, or sooner: when it fills up, when a
	// synced write comes (its one log write takes them along), and at
	// Sync, Checkpoint and Close. They reach the disk at the next Sync,
	// Checkpoint, Close, background flush (see NoSyncFlushBytes; about
	// once a second otherwise), when the index must flush, or with the
	// next synced write. Recovery after any crash yields a prefix of the
	// commit order that holds every synced write: what a crash takes is a
	// suffix of the unsynced writes. A crash of the process alone (kill
	// -9, a panic; the operating system keeps running) loses at most the
	// unsynced writes of the last NoSyncWriteDelay (plus the time one
	// write call takes), and at most one buffer of log records (64 KiB
	// plus the last commit group's records); a crash of the machine may
	// lose every unsynced write, up to about twice NoSyncFlushBytes. Use
	// it for bulk loads. Default false: an acknowledged write survives a
	// crash. WriteOptions.Sync overrides it per write; a synced write
	// never waits for, nor loses anything to, the buffering of unsynced
	// ones.
	NoSync bool

	// NoSyncWriteDelay is the longest time a NoSync write's log record
	// waits in memory before a background goroutine writes it to the log
	// file (with every other record that came meanwhile, in one write
	// call): the window of writes a crash of the process alone can take.
	// Default 2 ms; negative: the goroutine writes as soon as it runs,
	// which costs a write call per commit group under light load.
	NoSyncWriteDelay time.Duration

	// NoSyncFlushBytes bounds the unsynced writes (log records and the
	// heap values they point at) a database lets build up. When they reach
	// it, a commit kicks a background flush of the heap and the log and
	// goes on without waiting; only when they reach twice NoSyncFlushBytes
	// (the flushes cannot keep up) does a commit wait for the flush, so
	// what a crash of the machine can take, and how long freed space waits
	// to be reused, stay bounded. Default 16 MiB.
	NoSyncFlushBytes int64

	// InlineThreshold is the largest value, in bytes, kept inline in the
	// index rather than in the heap. Default 256 bytes. A negative value sends
	// every non-empty value to the heap.
	InlineThreshold int

	// CarryLimit is how many heap value bytes (stored, possibly
	// compressed) a commit group of durable writes carries in its log
	// records as well as writing them to the heap. A group whose heap
	// values together fit costs one device flush, of the log; the heap
	// blocks are flushed later, by a checkpoint, and recovery writes them
	// again from the log. So does a group of small values (none above
	// 8 KiB, or CarryLimit if that is less), whatever its total: it is
	// latency-bound at any size. A larger group with a larger value (it is
	// bandwidth-bound: carrying would write its bytes twice), and every
	// value of a NoSync write, have their heap blocks flushed before the
	// log records that point at them. Values up to CarryLimit are also the
	// ones the commit leader writes to the heap, a group's with few calls,
	// durable or not. Default 64 KiB; negative carries nothing, and each
	// writer writes its own values.
	CarryLimit int

	// BlockSize is the heap's allocation unit in bytes, a power of two from
	// 128 to 1 MiB: a value takes its size rounded up to a whole block.
	// Fixed when the database is created (a database keeps the block size
	// it was made with); ignored afterwards. Default 128 bytes.
	BlockSize int

	// SegmentSize is the size in bytes of a heap segment, the unit a writer
	// owns and the heap grows by: a multiple of 64 blocks. Fixed when the
	// database is created. Default 8 MiB.
	SegmentSize int64

	// LogSegmentSize is the size in bytes of one write-ahead log file.
	// Log files are created at this size, zero-filled, so that a synced
	// write only overwrites blocks the file system has already allocated
	// (one device flush, no metadata); the files a checkpoint frees are
	// kept and reused. Default 16 MiB.
	LogSegmentSize int64

	// CheckpointLogBytes is how much log may accumulate before a background
	// checkpoint bounds recovery time and deletes old log files. Default
	// 64 MiB. Values that synced writes carry in their log records
	// (CarryLimit) count only towards a longer limit, a sixteenth of the
	// heap file if that is more, up to four times CheckpointLogBytes: a
	// longer interval writes the heap back in fewer, denser writes. The
	// log, and its spare files, may then take that much disk space.
	// Negative disables automatic checkpoints.
	CheckpointLogBytes int64

	// IndexCacheSize is the memory in bytes the index's block cache keeps
	// for table blocks, beyond what the index's memtables take. Default
	// 128 MiB: the index of a few million keys fits in it (the index of
	// 2,400,000 YCSB keys, "user" and up to 19 digits, took 44 bytes a
	// key). (Pebble charges each memtable's size to its block cache; the
	// cache is made larger by the memtables' share, so that they do not
	// eat these bytes: see indexCacheCapacity.)
	IndexCacheSize int64

	// IndexMemTableSize is the size in bytes of one index memtable. Default
	// 8 MiB. In normal operation the index holds up to three (the one
	// taking writes, one being flushed, one kept for reuse), so its memory
	// is about IndexCacheSize + 3 x IndexMemTableSize; under a write stall
	// more memtables queue and take their room from the block cache.
	IndexMemTableSize int64

	// ValueCacheSize is the memory in bytes the value cache may hold:
	// decoded heap values that Get serves without reading the heap (inline
	// values are cached by the index's block cache, IndexCacheSize). Zero
	// means the default, 64 MiB; a negative value disables the cache.
	ValueCacheSize int64

	// EntryCacheSize is the memory in bytes the index-entry cache may
	// hold: the index entries (heap pointers, inline values) of keys read
	// or written recently (an entry that reads keep finding is kept over
	// one written or read only once), and after Open those of the keys
	// the index holds, as far as they fit (cached by the scan the first
	// write starts), so that a Get, and an overwrite's lookup of the entry
	// it replaces, skip the index (entrycache.go). Zero means the default,
	// 32 MiB (about 350,000 entries of a 24-byte key and a one-extent heap
	// pointer: 64-byte records); a negative value disables the cache.
	EntryCacheSize int64

	// NoHeapMap makes reads of heap values use pread instead of a memory
	// map of the heap. By default Get and iterators copy a value straight
	// out of a read-only map of the first in-sync replica (no system call;
	// values stored uncompressed skip the value cache, the page cache being
	// the only copy), and a fault on the map, such as an I/O error under a
	// mapped page, falls back to pread and its read repair (ARCHITECTURE.md,
	// refinement 21). Check, Scrub and recovery always use pread. Only
	// files of the operating system's file system are mapped. On Linux the
	// map's cached pages, and the pages writes add, are mapped in the
	// background ahead of reads (refinement 44): the process's RSS then
	// counts the heap's pages that the page cache holds.
	NoHeapMap bool

	// Compression is the codec new heap values are compressed with:
	// CodecNone (the default), CodecS2 (fast; gives up quickly on
	// incompressible data) or CodecZstd (smaller, slower). A value is
	// stored compressed only when that saves at least one heap block, and
	// every pointer records its codec, so the setting may change between
	// opens: values written under any setting read back. A value of 16 KiB
	// or more is sampled first (2 KiB at its start and at its middle); if
	// neither sample compresses, it is stored as it is, so incompressible
	// data costs almost nothing under either codec.
	Compression Codec

	// CompressionLevel tunes the codec. For CodecZstd, a zstd level from 1
	// to 22, mapped onto the four speeds the Go encoder implements (1-2
	// fastest, 3-5 default, 6-9 better, 10+ best); 0 means 3. For CodecS2,
	// 0 or 1 is the default speed, 2 "better", 3 or more "best". Ignored for
	// CodecNone.
	CompressionLevel int

	// Cursors is the number of allocation cursors, each owning one heap
	// segment at a time. Default 2*GOMAXPROCS.
	Cursors int

	// Mirrors are directories, ideally on other disks, that each hold a
	// further replica of the heap (a file named heap) and a small marker
	// file, MIRROR, naming the database and the replica. A relative path is
	// relative to the database directory. A mirror new to the database
	// must not hold a heap file or another marker yet (its directory is
	// created if missing, but not a missing parent) and is filled with a
	// copy of the allocated blocks in the background after Open (see
	// Replicas, AttachReplica). Once added, a mirror stays part of the
	// database even if a later Open does not name it. The directory of a
	// known mirror is never created, and Open makes no heap file in one that
	// lacks the mirror's marker: if its disk is not mounted (the directory
	// is missing, or is an empty mount point), the mirror stays stale until
	// the disk is back or AttachReplica is called. Default none.
	Mirrors []string

	// ResyncRate limits the copying of AttachReplica (and of the automatic
	// attach after Open) to this many bytes per second. Default 0: no limit.
	ResyncRate int64

	// ScrubRate limits Scrub to reading this many bytes per second.
	// Default 0: no limit.
	ScrubRate int64

	// DiskReserve is the size in bytes of the space reserve: a file,
	// RESERVE, that Open preallocates in the database directory and that
	// the database releases the moment it sees the file system full, so
	// that closing, reopening (which may replay and flush a whole
	// checkpoint interval of log into the index), deleting keys and the
	// checkpoint that returns their space can still write what they must.
	// Open, checkpoints and the background loop make the reserve again
	// when there is room. Default IndexMemTableSize + 1.25 x
	// CheckpointLogBytes + 8 MiB (96 MiB with the other defaults; see
	// ARCHITECTURE.md); negative disables it.
	DiskReserve int64

	// ReadOnly opens an existing database without writing to it: no
	// MANIFEST, checkpoint, log or heap write, no replica attached,
	// resynced or repaired, no new mirror added, no space reserve.
	// Writes, Checkpoint, AttachReplica, DetachReplica, Scrub and
	// read-write transactions return ErrReadOnly; Sync does nothing. The
	// directory is locked shared: several read-only handles, in this
	// process and (on Unix) in others, may hold it at once, and a
	// read-write Open waits for none of them but fails with ErrLocked. A
	// database whose log holds records after its last checkpoint (it
	// crashed) cannot be opened read-only: Open returns an error wrapping
	// ErrReadOnly that says to open it read-write once. Check works;
	// every heap read is verified, and a bad copy is served from another
	// in-sync replica but not rewritten.
	ReadOnly bool

	// FileMode is the permission bits of the files the database creates
	// on the operating system's file system; its directories get the same
	// bits plus search (x) wherever read (r) is set. Default 0600 (and
	// 0700): the owner alone. Widen it (0640, 0644) to share the files; it
	// must include 0600, and it applies to files created from then on.
	FileMode fs.FileMode

	// Logger receives the database's log lines. Default slog.Default().
	Logger *slog.Logger

	// fs is the file system every file is opened through; tests swap in
	// crash-simulating and fault-injecting ones (see export_test.go).
	fs vfs.FS

	noAutoAttach    bool          // tests: Open does not attach stale replicas
	mapAnyFS        bool          // tests: map the heap through fs, not only vfs.Default (the map's reads bypass fs)
	markDelay       time.Duration // tests: idle time before the sync mark is flushed (0: markDelay), and the least time between flushes under load if above markInterval
	resyncSaveBytes int64         // tests: copy between saves of resync progress (0: defaultResyncSaveBytes)
	// tests: every write the key filter rules out is looked up too, and
	// fails if the index holds its key (presence.go)
	crossCheckPresence bool
	// tests: every entry-cache hit is compared with the index, and Get
	// fails if they differ (entrycache.go)
	crossCheckEntryCache bool
	// applyingIncrement lets Open open a backup copy whose incremental
	// update is in progress (backupstate.go): only Backup sets it.
	applyingIncrement bool
}

// withDefaults returns a validated copy of o with every zero field set.
func (o *Options) withDefaults() (Options, error) {
	var c Options
	if o != nil {
		c = *o
	}
	if c.NoSyncFlushBytes == 0 {
		c.NoSyncFlushBytes = DefaultNoSyncFlushBytes
	}
	if c.NoSyncWriteDelay == 0 {
		c.NoSyncWriteDelay = DefaultNoSyncWriteDelay
	}
	if c.InlineThreshold == 0 {
		c.InlineThreshold = DefaultInlineThreshold
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = DefaultSegmentSize
	}
	if c.LogSegmentSize == 0 {
		c.LogSegmentSize = DefaultLogSegmentSize
		if testLogSegmentSize != 0 {
			c.LogSegmentSize = testLogSegmentSize
		}
	}
	if c.CheckpointLogBytes == 0 {
		c.CheckpointLogBytes = DefaultCheckpointLogBytes
	}
	if c.IndexCacheSize == 0 {
		c.IndexCacheSize = DefaultIndexCacheSize
	}
	if c.IndexMemTableSize == 0 {
		c.IndexMemTableSize = DefaultIndexMemTableSize
	}
	if c.CarryLimit == 0 {
		c.CarryLimit = DefaultCarryLimit
	}
	if c.EntryCacheSize == 0 {
		c.EntryCacheSize = DefaultEntryCacheSize
	}
	if c.ValueCacheSize == 0 {
		c.ValueCacheSize = DefaultValueCacheSize
	}
	if c.DiskReserve == 0 {
		logBytes := c.CheckpointLogBytes
		if logBytes < 0 {
			logBytes = DefaultCheckpointLogBytes
		}
		c.DiskReserve = c.IndexMemTableSize + logBytes + logBytes/4 + 8<<20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.FileMode == 0 {
		c.FileMode = DefaultFileMode
	}
	if c.fs == nil {
		c.fs = vfs.Default
	}

	var bad []string
	if g := (alloc.Geometry{BlockSize: c.BlockSize, SegmentBlocks: 64}); g.Validate() != nil {
		bad = append(bad, fmt.Sprintf("BlockSize %d is not a power of two from %d to %d", c.BlockSize, alloc.MinBlockSize, alloc.MaxBlockSize))
	} else if c.SegmentSize <= 0 || c.SegmentSize%int64(c.BlockSize) != 0 || c.geometry().Validate() != nil {
		bad = append(bad, fmt.Sprintf("SegmentSize %d is not a multiple of 64 blocks (%d bytes) of at most %d blocks", c.SegmentSize, 64*c.BlockSize, alloc.MaxSegmentBlocks))
	}
	if c.InlineThreshold > MaxValueSize {
		bad = append(bad, fmt.Sprintf("InlineThreshold %d exceeds MaxValueSize", c.InlineThreshold))
	}
	if c.NoSyncFlushBytes < 0 {
		bad = append(bad, fmt.Sprintf("NoSyncFlushBytes %d is negative", c.NoSyncFlushBytes))
	}
	if c.LogSegmentSize < 64<<10 {
		bad = append(bad, fmt.Sprintf("LogSegmentSize %d is below 64 KiB", c.LogSegmentSize))
	}
	if c.IndexCacheSize < 0 {
		bad = append(bad, fmt.Sprintf("IndexCacheSize %d is negative", c.IndexCacheSize))
	}
	if c.IndexMemTableSize < 1<<20 {
		bad = append(bad, fmt.Sprintf("IndexMemTableSize %d is below 1 MiB", c.IndexMemTableSize))
	}
	if !c.Compression.valid() {
		bad = append(bad, fmt.Sprintf("Compression %d is not CodecNone, CodecS2 or CodecZstd", c.Compression))
	}
	if c.CompressionLevel < 0 || c.CompressionLevel > 22 {
		bad = append(bad, fmt.Sprintf("CompressionLevel %d is not from 0 to 22", c.CompressionLevel))
	}
	if c.FileMode&0o600 != 0o600 || c.FileMode&^fs.ModePerm != 0 {
		bad = append(bad, fmt.Sprintf("FileMode %v is not permission bits that include 0600 (owner read and write)", c.FileMode))
	}
	if c.Cursors < 0 {
		bad = append(bad, fmt.Sprintf("Cursors %d is negative", c.Cursors))
	}
	if c.ResyncRate < 0 || c.ScrubRate < 0 {
		bad = append(bad, fmt.Sprintf("ResyncRate %d or ScrubRate %d is negative", c.ResyncRate, c.ScrubRate))
	}
	seen := map[string]bool{}
	for _, m := range c.Mirrors {
		if m == "" || seen[filepath.Clean(m)] || filepath.Clean(m) == "." {
			bad = append(bad, fmt.Sprintf("Mirrors: %q is empty, the database directory or named twice", m))
		}
		seen[filepath.Clean(m)] = true
	}
	c.Mirrors = slices.Clone(c.Mirrors)
	if len(bad) > 0 {
		return c, fmt.Errorf("%w: %s", ErrInvalidOptions, strings.Join(bad, "; "))
	}
	return c, nil
}

// geometry is the heap geometry a new database gets from o.
func (o *Options) geometry() alloc.Geometry {
	return alloc.Geometry{BlockSize: o.BlockSize, SegmentBlocks: int(o.SegmentSize / int64(o.BlockSize))}
}
