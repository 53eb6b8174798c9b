// Package promstats exports a heapkv database's statistics (heapkv.Stats)
// to Prometheus. It is a package of its own so that the database does not
// make every program that embeds it depend on the Prometheus client.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(promstats.NewCollector(db, nil))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Every metric is named heapkv_*; counters end in _total, sizes in
// _bytes, latencies are histograms in seconds. Each scrape calls
// DB.Stats once; a database that is closed yields no metrics and one
// error for the scrape.
package promstats

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heapkv/heapkv"
)

// Collector is a prometheus.Collector of one database's Stats.
type Collector struct {
	db      *heapkv.DB
	labels  prometheus.Labels
	metrics []metric
	write   *prometheus.Desc
	sync    *prometheus.Desc
}

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*heapkv.Stats) float64
}

// NewCollector returns a collector of db's statistics; labels (for
// example the database's name) are added to every metric.
func NewCollector(db *heapkv.DB, labels prometheus.Labels) *Collector {
	c := &Collector{db: db, labels: labels}
	counter := func(name, help string, v func(*heapkv.Stats) int64) {
		c.add(name, help, prometheus.CounterValue, func(s *heapkv.Stats) float64 { return float64(v(s)) })
	}
	gauge := func(name, help string, v func(*heapkv.Stats) float64) {
		c.add(name, help, prometheus.GaugeValue, v)
	}
	i := func(f func(*heapkv.Stats) int64) func(*heapkv.Stats) float64 {
		return func(s *heapkv.Stats) float64 { return float64(f(s)) }
	}
	b := func(f func(*heapkv.Stats) bool) func(*heapkv.Stats) float64 {
		return func(s *heapkv.Stats) float64 {
			if f(s) {
				return 1
			}
			return 0
		}
	}
	counter("commits_total", "Writes committed (Put, Delete, Apply, transaction commits).", func(s *heapkv.Stats) int64 { return s.Commits })
	counter("commit_groups_total", "Commit groups: writes that shared one log write.", func(s *heapkv.Stats) int64 { return s.CommitGroups })
	counter("gets_total", "Point reads.", func(s *heapkv.Stats) int64 { return s.Gets })
	counter("fsyncs_total", "File flushes of the log and the heap.", func(s *heapkv.Stats) int64 { return s.Fsyncs })
	counter("checkpoints_total", "Checkpoints written.", func(s *heapkv.Stats) int64 { return s.Checkpoints })
	counter("txn_commits_total", "Transactions committed.", func(s *heapkv.Stats) int64 { return s.TxnCommits })
	counter("txn_conflicts_total", "Transactions refused with ErrConflict.", func(s *heapkv.Stats) int64 { return s.TxnConflicts })
	counter("heap_values_written_total", "Values written to the heap.", func(s *heapkv.Stats) int64 { return s.HeapValuesWritten })
	counter("heap_written_bytes_total", "Bytes of values written to the heap, before compression.", func(s *heapkv.Stats) int64 { return s.HeapWrittenBytes })
	counter("heap_written_stored_bytes_total", "Bytes written to the heap, after compression.", func(s *heapkv.Stats) int64 { return s.HeapWrittenStored })
	counter("read_repairs_total", "Bad heap copies rewritten from another replica by reads.", func(s *heapkv.Stats) int64 { return s.ReadRepairs })
	counter("heap_map_faults_total", "Reads that faulted on the heap's memory map and used pread.", func(s *heapkv.Stats) int64 { return s.HeapMapFaults })
	counter("heap_map_populated_bytes_total", "Bytes of the heap's memory map mapped ahead of reads since Open.", func(s *heapkv.Stats) int64 { return s.HeapMapPopulated })
	counter("entry_cache_hits_total", "Index lookups served by the entry cache.", func(s *heapkv.Stats) int64 { return s.EntryCacheHits })
	counter("entry_cache_misses_total", "Index lookups that read the index.", func(s *heapkv.Stats) int64 { return s.EntryCacheMisses })
	counter("value_cache_hits_total", "Heap reads served by the value cache.", func(s *heapkv.Stats) int64 { return s.ValueCacheHits })
	counter("value_cache_misses_total", "Heap reads the value cache did not serve.", func(s *heapkv.Stats) int64 { return s.ValueCacheMisses })
	counter("index_cache_hits_total", "Index block cache hits.", func(s *heapkv.Stats) int64 { return s.IndexCacheHits })
	counter("index_cache_misses_total", "Index block cache misses.", func(s *heapkv.Stats) int64 { return s.IndexCacheMisses })
	gauge("keys", "Live keys.", i(func(s *heapkv.Stats) int64 { return s.Keys }))
	gauge("lsn", "Last log sequence number applied.", func(s *heapkv.Stats) float64 { return float64(s.LSN) })
	gauge("inline_bytes", "Value bytes stored inline in the index.", i(func(s *heapkv.Stats) int64 { return s.InlineBytes }))
	gauge("heap_live_bytes", "Heap bytes holding live values.", i(func(s *heapkv.Stats) int64 { return s.HeapLiveBytes }))
	gauge("heap_pending_free_bytes", "Heap bytes freed and not yet reusable.", i(func(s *heapkv.Stats) int64 { return s.HeapPendingFree }))
	gauge("heap_file_bytes", "Size of the heap file.", i(func(s *heapkv.Stats) int64 { return s.HeapFileBytes }))
	gauge("heap_file_allocated_bytes", "Bytes the file system allocated to the heap file (-1: unknown).", i(func(s *heapkv.Stats) int64 { return s.HeapFileAllocatedBytes }))
	gauge("heap_segments", "Segments of the heap.", func(s *heapkv.Stats) float64 { return float64(s.HeapSegments) })
	gauge("heap_empty_segments", "Heap segments with no live block.", func(s *heapkv.Stats) float64 { return float64(s.HeapEmptySegments) })
	gauge("heap_sparse_segments", "Heap segments at most half live (Compact moves their values).", func(s *heapkv.Stats) float64 { return float64(s.HeapSparseSegments) })
	gauge("log_bytes", "Bytes of the write-ahead log.", i(func(s *heapkv.Stats) int64 { return s.LogBytes }))
	gauge("log_since_checkpoint_bytes", "Bytes of log records since the last checkpoint.", i(func(s *heapkv.Stats) int64 { return s.LogSinceCheckpoint }))
	gauge("log_since_checkpoint_carried_bytes", "Bytes of values carried in log records since the last checkpoint.", i(func(s *heapkv.Stats) int64 { return s.LogSinceCheckpointCarried }))
	gauge("checkpoint_carried_limit_bytes", "Log bytes, carried values included, at which a background checkpoint is due.", i(func(s *heapkv.Stats) int64 { return s.CheckpointCarriedLimit }))
	counter("log_segments_prepared_total", "Log segments zero-filled since Open.", func(s *heapkv.Stats) int64 { return s.LogSegmentsPrepared })
	counter("log_segments_recycled_total", "Obsolete log segments kept for reuse since Open.", func(s *heapkv.Stats) int64 { return s.LogSegmentsRecycled })
	gauge("index_bytes", "Bytes of the index's tables.", i(func(s *heapkv.Stats) int64 { return s.IndexBytes }))
	gauge("index_tables", "Tables of the index's LSM.", i(func(s *heapkv.Stats) int64 { return s.IndexTables }))
	gauge("index_l0_tables", "Tables in L0 of the index's LSM.", i(func(s *heapkv.Stats) int64 { return s.IndexL0Tables }))
	gauge("index_read_amp", "Read amplification of the index's LSM.", func(s *heapkv.Stats) float64 { return float64(s.IndexReadAmp) })
	gauge("index_compaction_debt_bytes", "Bytes the index's compactions estimate they owe.", i(func(s *heapkv.Stats) int64 { return s.IndexCompactionDebt }))
	counter("index_compactions_total", "Compactions of the index.", func(s *heapkv.Stats) int64 { return s.IndexCompactions })
	gauge("index_memtable_bytes", "Memory of the index's memtables.", i(func(s *heapkv.Stats) int64 { return s.IndexMemTableBytes }))
	gauge("entry_cache_bytes", "Bytes the entry cache holds.", i(func(s *heapkv.Stats) int64 { return s.EntryCacheBytes }))
	gauge("value_cache_bytes", "Bytes the value cache holds.", i(func(s *heapkv.Stats) int64 { return s.ValueCacheBytes }))
	gauge("open_snapshots", "Open snapshots.", func(s *heapkv.Stats) float64 { return float64(s.OpenSnapshots) })
	gauge("open_iterators", "Open iterators.", func(s *heapkv.Stats) float64 { return float64(s.OpenIterators) })
	gauge("open_txns", "Open transactions.", func(s *heapkv.Stats) float64 { return float64(s.OpenTxns) })
	gauge("oldest_reader_age_seconds", "Age of the oldest open reader, which holds back heap reuse.", func(s *heapkv.Stats) float64 { return s.OldestReaderAge.Seconds() })
	gauge("replicas", "Heap replicas.", func(s *heapkv.Stats) float64 { return float64(s.Replicas) })
	gauge("replicas_in_sync", "Heap replicas in sync.", func(s *heapkv.Stats) float64 { return float64(s.ReplicasInSync) })
	gauge("disk_full", "1 while the space reserve is released (the disk filled).", b(func(s *heapkv.Stats) bool { return s.DiskFull }))
	gauge("failed", "1 once an I/O error stopped writes (reopen to recover).", b(func(s *heapkv.Stats) bool { return s.Failed != "" }))
	gauge("scrub_running", "1 while a scrub runs.", b(func(s *heapkv.Stats) bool { return s.ScrubRunning }))
	c.write = prometheus.NewDesc("heapkv_write_latency_seconds", "Latency of writes, from the call to its return.", nil, labels)
	c.sync = prometheus.NewDesc("heapkv_sync_latency_seconds", "Latency of the flushes that make writes durable.", nil, labels)
	return c
}

func (c *Collector) add(name, help string, kind prometheus.ValueType, v func(*heapkv.Stats) float64) {
	c.metrics = append(c.metrics, metric{prometheus.NewDesc("heapkv_"+name, help, nil, c.labels), kind, v})
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	ch <- c.write
	ch <- c.sync
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.db.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.write, err)
		return
	}
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&s))
	}
	ch <- histogram(c.write, s.WriteLatency)
	ch <- histogram(c.sync, s.SyncLatency)
}

// histogram turns a Latency into a Prometheus histogram with the
// power-of-two buckets it was counted in (from 1 µs up; the finer ones are
// folded into the first).
func histogram(d *prometheus.Desc, l heapkv.Latency) prometheus.Metric {
	const first = 10 // 2^10 ns, about 1 µs
	buckets := make(map[float64]uint64, len(l.Buckets)-first)
	var cum uint64
	for i, n := range l.Buckets {
		cum += uint64(n)
		if i >= first && i < len(l.Buckets)-1 {
			buckets[heapkv.BucketUpperBound(i).Seconds()] = cum
		}
	}
	return prometheus.MustNewConstHistogram(d, cum, l.Sum.Seconds(), buckets)
}
