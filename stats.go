package heapkv

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/internal/histo"
	"github.com/heapkv/heapkv/mirror"
)

// counters are the logical totals Stats reports, kept exactly across
// checkpoints (the MANIFEST and the index marker record them) and replay
// (every record op says what its write replaced).
type counters struct {
	keys            int64
	inlineBytes     int64
	heapRawBytes    int64
	heapStoredBytes int64
}

// add counts a key that now holds v.
func (c *counters) add(v keyState) {
	switch v.kind {
	case keyInline:
		c.keys++
		c.inlineBytes += int64(v.raw)
	case keyHeap:
		c.keys++
		c.heapRawBytes += int64(v.raw)
		c.heapStoredBytes += int64(v.stored)
	}
}

// remove uncounts a key that held v.
func (c *counters) remove(v keyState) {
	switch v.kind {
	case keyInline:
		c.keys--
		c.inlineBytes -= int64(v.raw)
	case keyHeap:
		c.keys--
		c.heapRawBytes -= int64(v.raw)
		c.heapStoredBytes -= int64(v.stored)
	}
}

// plus returns c with d added.
func (c counters) plus(d counters) counters {
	return counters{
		keys:            c.keys + d.keys,
		inlineBytes:     c.inlineBytes + d.inlineBytes,
		heapRawBytes:    c.heapRawBytes + d.heapRawBytes,
		heapStoredBytes: c.heapStoredBytes + d.heapStoredBytes,
	}
}

// opStats are the monotonically increasing counters of this handle that
// Stats reports.
type opStats struct {
	commits      atomic.Int64
	groups       atomic.Int64
	checkpoints  atomic.Int64
	gets         atomic.Int64
	txnCommits   atomic.Int64
	txnConflicts atomic.Int64
	readRepairs  atomic.Int64    // bad heap copies rewritten by reads
	writeLatency histo.Histogram // Put, Delete, Apply, Txn.Commit: call to return, successful ones
	syncLatency  histo.Histogram // flushes making writes durable (syncThrough)
	codec        codecStats      // heap values written (codec.go)
	scrub        scrubProgress   // the running or last Scrub (scrub.go)
}

// Stats is a point-in-time summary of a database. Byte counts are bytes.
type Stats struct {
	FormatVersion   uint32 `json:"format_version"`    // on-disk format version
	BlockSize       int    `json:"block_size"`        // heap block size in bytes, fixed at creation
	SegmentSize     int64  `json:"segment_size"`      // heap segment size in bytes, fixed at creation
	Keys            int64  `json:"keys"`              // live keys
	InlineBytes     int64  `json:"inline_bytes"`      // value bytes stored inline in the index
	HeapValueBytes  int64  `json:"heap_value_bytes"`  // value bytes of heap values (before compression)
	HeapStoredBytes int64  `json:"heap_stored_bytes"` // bytes those values occupy in the heap (after compression)
	HeapLiveBytes   int64  `json:"heap_live_bytes"`   // heap blocks referenced by live values, in bytes
	HeapAllocBytes  int64  `json:"heap_alloc_bytes"`  // heap blocks allocated (live + deferred frees + in-flight writes), in bytes
	HeapPendingFree int64  `json:"heap_pending_free"` // heap bytes freed but not yet reusable (invariant 5)
	HeapFileBytes   int64  `json:"heap_file_bytes"`   // heap file size: header area plus every segment
	HeapSegments    int    `json:"heap_segments"`     // segments in the heap
	// Fragmentation and space given back (compact.go): segments with no
	// live block, those of them given back to the file system with a
	// hole, segments at most half live, and the bytes the file system has
	// allocated to the heap file (first in-sync replica; -1 where the
	// platform cannot tell), which holes make smaller than HeapFileBytes.
	HeapEmptySegments      int   `json:"heap_empty_segments"`
	HeapPunchedSegments    int   `json:"heap_punched_segments"`
	HeapSparseSegments     int   `json:"heap_sparse_segments"`
	HeapFileAllocatedBytes int64 `json:"heap_file_allocated_bytes"`

	LogBytes int64 `json:"log_bytes"` // bytes in log files on disk
	LogFiles int   `json:"log_files"` // log files on disk
	// Log segments since Open: new ones zero-filled (preparing one writes
	// LogSegmentSize bytes of zeros), and obsolete ones kept for reuse
	// instead. A database past its first checkpoints mostly reuses.
	LogSegmentsPrepared int64  `json:"log_segments_prepared"`
	LogSegmentsRecycled int64  `json:"log_segments_recycled"`
	LSN                 uint64 `json:"lsn"`
	CheckpointLSN       uint64 `json:"checkpoint_lsn"`
	Checkpoints         int64  `json:"checkpoints"` // checkpoints written by this handle
	// The log's records since the last checkpoint, in bytes, and the part
	// of them that is values the records carry; a background checkpoint is
	// due at Options.CheckpointLogBytes of the rest, or at
	// CheckpointCarriedLimit in all (a sixteenth of the heap file, within
	// one to four times CheckpointLogBytes; 0 when automatic checkpoints
	// are off; ARCHITECTURE.md, refinement 58).
	LogSinceCheckpoint        int64   `json:"log_since_checkpoint"`
	LogSinceCheckpointCarried int64   `json:"log_since_checkpoint_carried"`
	CheckpointCarriedLimit    int64   `json:"checkpoint_carried_limit"`
	Commits                   int64   `json:"commits"`       // writes (Put, Delete, Apply) committed by this handle
	CommitGroups              int64   `json:"commit_groups"` // log appends those commits were grouped into
	AvgGroupSize              float64 `json:"avg_group_size"`
	Fsyncs                    int64   `json:"fsyncs"` // fsyncs of the heap, the log and its sync mark by this handle
	Gets                      int64   `json:"gets"`
	IndexBytes                int64   `json:"index_bytes"` // index (Pebble) size on disk
	// The index's LSM shape (Pebble's metrics): tables in all levels and
	// in L0, its read amplification (L0 sublevels plus non-empty levels),
	// the bytes compactions estimate they owe, compactions run, and the
	// memory its memtables take.
	IndexTables         int64 `json:"index_tables"`
	IndexL0Tables       int64 `json:"index_l0_tables"`
	IndexReadAmp        int   `json:"index_read_amp"`
	IndexCompactionDebt int64 `json:"index_compaction_debt"`
	IndexCompactions    int64 `json:"index_compactions"`
	IndexMemTableBytes  int64 `json:"index_memtable_bytes"`
	// The index's block cache: bytes of table blocks it holds (room for
	// Options.IndexCacheSize beside full memtables, more while they take
	// less), and the lookups it answered and missed since Open.
	IndexCacheBytes  int64 `json:"index_cache_bytes"`
	IndexCacheHits   int64 `json:"index_cache_hits"`
	IndexCacheMisses int64 `json:"index_cache_misses"`
	// KeyFilterSkips counts the write operations (each Put or Delete of a
	// batch) since Open whose key the key filter ruled out, which
	// therefore did not look up the key's old entry.
	KeyFilterSkips int64  `json:"key_filter_skips"`
	Failed         string `json:"failed"`    // the failure that stopped writes (ErrFailed), or ""
	DiskFull       bool   `json:"disk_full"` // the space reserve is released (Options.DiskReserve)

	// Readers (snapshot.go): open snapshots, iterators and transactions;
	// the LSN and age of the oldest, which holds back the reuse of every
	// heap block freed after it (invariant 5); transactions committed and
	// failed with ErrConflict by this handle; keys the conflict tracker
	// remembers for open read-write transactions.
	OpenSnapshots   int           `json:"open_snapshots"`
	OpenIterators   int           `json:"open_iterators"`
	OpenTxns        int           `json:"open_txns"`
	OldestReaderLSN uint64        `json:"oldest_reader_lsn"`
	OldestReaderAge time.Duration `json:"oldest_reader_age_ns"`
	TxnCommits      int64         `json:"txn_commits"`
	TxnConflicts    int64         `json:"txn_conflicts"`
	TxnTrackedKeys  int64         `json:"txn_tracked_keys"`

	// Heap values written by this handle: how many, their bytes before and
	// after compression (Options.Compression), and how many were stored
	// compressed (only values whose compression saves a heap block are).
	HeapValuesWritten    int64 `json:"heap_values_written"`
	HeapWrittenBytes     int64 `json:"heap_written_bytes"`
	HeapWrittenStored    int64 `json:"heap_written_stored"`
	HeapValuesCompressed int64 `json:"heap_values_compressed"`

	// Value cache (Options.ValueCacheSize): Gets of heap values served from
	// memory (hits) or from the heap (misses), entries evicted to make room,
	// and the bytes the entries hold (values plus per-entry overhead).
	ValueCacheHits      int64 `json:"value_cache_hits"`
	ValueCacheMisses    int64 `json:"value_cache_misses"`
	ValueCacheEvictions int64 `json:"value_cache_evictions"`
	ValueCacheBytes     int64 `json:"value_cache_bytes"`

	// The index-entry cache (Options.EntryCacheSize): lookups served from
	// it and lookups that read the index (a Get's, and an overwrite's of
	// the entry it replaces), and the bytes it holds.
	EntryCacheHits   int64 `json:"entry_cache_hits"`
	EntryCacheMisses int64 `json:"entry_cache_misses"`
	EntryCacheBytes  int64 `json:"entry_cache_bytes"`

	// Heap replicas (replicas.go; details in DB.Replicas): how many there
	// are and are in sync, bad copies rewritten by reads of this handle,
	// and the values and bytes the running or last Scrub has verified.
	// HeapMapped says whether reads go through a memory map of the heap
	// (Options.NoHeapMap); HeapMapFaults counts reads that faulted on it
	// and were served by pread instead; HeapMapPopulated counts the bytes
	// of the map mapped ahead of reads since Open (Linux; refinement 44),
	// which the process's RSS then counts.
	Replicas         int   `json:"replicas"`
	ReplicasInSync   int   `json:"replicas_in_sync"`
	ReadRepairs      int64 `json:"read_repairs"`
	HeapMapped       bool  `json:"heap_mapped"`
	HeapMapFaults    int64 `json:"heap_map_faults"`
	HeapMapPopulated int64 `json:"heap_map_populated_bytes"`
	ScrubRunning     bool  `json:"scrub_running"`
	ScrubValues      int64 `json:"scrub_values"`
	ScrubBytes       int64 `json:"scrub_bytes"`

	// Latencies since Open (latency.go): of writes (Put, Delete, Apply and
	// transaction commits, from the call to its return; successful ones
	// only) and of the flushes that make writes durable (the heap's, when
	// due, and the log's, timed together).
	WriteLatency Latency `json:"write_latency"`
	SyncLatency  Latency `json:"sync_latency"`
}

// Stats returns current statistics.
func (db *DB) Stats() (Stats, error) {
	if err := db.enter(); err != nil {
		return Stats{}, err
	}
	defer db.leave()
	var s Stats
	db.applier.mu.Lock()
	c := db.applier.counters
	s.HeapPendingFree = db.applier.frees.bytes
	s.LSN = uint64(db.applied.Load())
	s.LogSinceCheckpoint, s.LogSinceCheckpointCarried = db.applier.sinceCkpt, db.applier.sinceCkptCarried
	db.applier.mu.Unlock()
	if db.opts.CheckpointLogBytes > 0 {
		s.CheckpointCarriedLimit = db.carriedLogLimit()
	}
	s.FormatVersion = filehdr.Version
	s.BlockSize = db.geom.BlockSize
	s.SegmentSize = db.geom.SegmentBytes()
	s.Keys, s.InlineBytes, s.HeapValueBytes, s.HeapStoredBytes = c.keys, c.inlineBytes, c.heapRawBytes, c.heapStoredBytes
	bs := int64(db.geom.BlockSize)
	as := db.alloc.Stats()
	s.HeapSegments = as.Segments
	s.HeapAllocBytes = as.AllocatedBlocks * bs
	s.HeapLiveBytes = s.HeapAllocBytes - s.HeapPendingFree
	s.HeapFileBytes = mirror.HeaderArea(db.geom.BlockSize) + int64(as.Segments)*int64(db.geom.SegmentBlocks)*bs
	s.HeapEmptySegments, s.HeapPunchedSegments = as.EmptySegments, as.PunchedSegments
	s.HeapSparseSegments = as.SparseSegments
	s.HeapFileAllocatedBytes = -1
	if _, a, err := db.heap.SpaceUsed(); err == nil {
		s.HeapFileAllocatedBytes = a
	}
	if log := db.log.Load(); log != nil {
		ls := log.Stats()
		s.LogBytes, s.LogFiles = ls.Bytes, ls.Segments
		s.LogSegmentsPrepared, s.LogSegmentsRecycled = int64(ls.SparesPrepared), int64(ls.SegmentsRecycled)
		s.Fsyncs += int64(ls.Syncs + ls.MarkSyncs)
	}
	s.Fsyncs += db.heap.Syncs()
	s.CheckpointLSN = uint64(db.ckpt.lsn.Load())
	s.Checkpoints = db.stats.checkpoints.Load()
	s.Commits = db.stats.commits.Load()
	s.CommitGroups = db.stats.groups.Load()
	if s.CommitGroups > 0 {
		s.AvgGroupSize = float64(s.Commits) / float64(s.CommitGroups)
	}
	s.Gets = db.stats.gets.Load()
	s.WriteLatency = latencyOf(&db.stats.writeLatency)
	s.SyncLatency = latencyOf(&db.stats.syncLatency)
	db.readerStats(&s)
	s.HeapValuesWritten = db.stats.codec.values.Load()
	s.HeapWrittenBytes = db.stats.codec.rawBytes.Load()
	s.HeapWrittenStored = db.stats.codec.stored.Load()
	s.HeapValuesCompressed = db.stats.codec.compressed.Load()
	if vc := db.vcache; vc != nil {
		s.ValueCacheHits, s.ValueCacheMisses = vc.hits.Load(), vc.misses.Load()
		s.ValueCacheEvictions, s.ValueCacheBytes = vc.evictions.Load(), vc.bytes()
	}
	if ec := db.ecache; ec != nil {
		s.EntryCacheHits, s.EntryCacheMisses, s.EntryCacheBytes = ec.stats()
	}
	s.Replicas, s.ReplicasInSync = db.heap.Replicas(), db.heap.InSync()
	s.ReadRepairs = db.stats.readRepairs.Load()
	s.HeapMapped, s.HeapMapFaults, s.HeapMapPopulated = db.heap.Mapped(), db.heap.MapFaults(), db.heap.PopulatedBytes()
	s.ScrubRunning = db.stats.scrub.running.Load()
	s.ScrubValues, s.ScrubBytes = db.stats.scrub.values.Load(), db.stats.scrub.bytes.Load()
	m := db.index.Metrics()
	s.IndexBytes = int64(m.DiskSpaceUsage())
	s.IndexTables, s.IndexL0Tables = m.Total().TablesCount, m.Levels[0].TablesCount
	s.IndexReadAmp, s.IndexCompactionDebt, s.IndexCompactions = m.ReadAmp(), int64(m.Compact.EstimatedDebt), m.Compact.Count
	s.IndexMemTableBytes = int64(m.MemTable.Size)
	s.IndexCacheBytes, s.IndexCacheHits, s.IndexCacheMisses = m.BlockCache.Size, m.BlockCache.Hits, m.BlockCache.Misses
	s.KeyFilterSkips = db.presence.skipped.Load()
	if err := db.failed(); err != nil {
		s.Failed = err.Error()
	}
	s.DiskFull = db.reserve.diskFull.Load()
	return s, nil
}

// String formats the stats as aligned lines.
func (s Stats) String() string {
	var b strings.Builder
	line := func(name, format string, args ...any) {
		fmt.Fprintf(&b, "%-18s "+format+"\n", append([]any{name}, args...)...)
	}
	line("format", "v%d, %d-byte blocks, %d-byte segments", s.FormatVersion, s.BlockSize, s.SegmentSize)
	line("keys", "%d", s.Keys)
	line("inline bytes", "%d", s.InlineBytes)
	line("heap value bytes", "%d (stored %d)", s.HeapValueBytes, s.HeapStoredBytes)
	line("heap live bytes", "%d", s.HeapLiveBytes)
	line("heap alloc bytes", "%d (pending free %d)", s.HeapAllocBytes, s.HeapPendingFree)
	line("heap file bytes", "%d (%d segments)", s.HeapFileBytes, s.HeapSegments)
	line("log bytes", "%d (%d files; segments since open: %d prepared, %d recycled)", s.LogBytes, s.LogFiles, s.LogSegmentsPrepared, s.LogSegmentsRecycled)
	line("index bytes", "%d", s.IndexBytes)
	line("index lsm", "%d tables (%d in L0), read amp %d, compaction debt %d bytes, %d compactions, memtables %d bytes",
		s.IndexTables, s.IndexL0Tables, s.IndexReadAmp, s.IndexCompactionDebt, s.IndexCompactions, s.IndexMemTableBytes)
	line("index cache", "%d bytes, %d hits, %d misses", s.IndexCacheBytes, s.IndexCacheHits, s.IndexCacheMisses)
	line("key filter", "%d lookups skipped", s.KeyFilterSkips)
	line("lsn", "%d (checkpoint %d, %d checkpoints)", s.LSN, s.CheckpointLSN, s.Checkpoints)
	due := "no automatic checkpoints"
	if s.CheckpointCarriedLimit > 0 {
		due = fmt.Sprintf("due at %d in all", s.CheckpointCarriedLimit)
	}
	line("log since checkpoint", "%d bytes (%d of carried values; %s)", s.LogSinceCheckpoint, s.LogSinceCheckpointCarried, due)
	line("commits", "%d in %d groups (avg %.2f)", s.Commits, s.CommitGroups, s.AvgGroupSize)
	line("fsyncs", "%d", s.Fsyncs)
	line("gets", "%d", s.Gets)
	line("heap writes", "%d values (%d bytes, stored %d; %d compressed)", s.HeapValuesWritten, s.HeapWrittenBytes, s.HeapWrittenStored, s.HeapValuesCompressed)
	line("entry cache", "%d hits, %d misses, %d bytes", s.EntryCacheHits, s.EntryCacheMisses, s.EntryCacheBytes)
	line("value cache", "%d hits, %d misses, %d evictions, %d bytes", s.ValueCacheHits, s.ValueCacheMisses, s.ValueCacheEvictions, s.ValueCacheBytes)
	line("readers", "%d snapshots, %d iterators, %d txns (oldest LSN %d, age %v)", s.OpenSnapshots, s.OpenIterators, s.OpenTxns, s.OldestReaderLSN, s.OldestReaderAge)
	line("transactions", "%d committed, %d conflicts, %d tracked keys", s.TxnCommits, s.TxnConflicts, s.TxnTrackedKeys)
	line("replicas", "%d (%d in sync), %d read repairs", s.Replicas, s.ReplicasInSync, s.ReadRepairs)
	line("heap map", "%v, %d faults, %d bytes populated", s.HeapMapped, s.HeapMapFaults, s.HeapMapPopulated)
	line("scrub", "running %v, %d values, %d bytes", s.ScrubRunning, s.ScrubValues, s.ScrubBytes)
	line("write latency", "%v", s.WriteLatency)
	line("sync latency", "%v", s.SyncLatency)
	if s.DiskFull {
		line("DISK FULL", "space reserve released: values are refused while less than half of it is free")
	}
	if s.Failed != "" {
		line("FAILED", "%s", s.Failed)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
