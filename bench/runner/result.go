package runner

import "time"

// What a run reports: per phase, throughput, latency per operation type,
// space, writes, memory and CPU.

// Percentiles reported, in percent.
var Percentiles = []float64{50, 95, 99, 99.9}

// OpStats summarises one operation type in one phase.
type OpStats struct {
	Count  int64   `json:"count"`
	Errors int64   `json:"errors"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P95Us  float64 `json:"p95_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
}

// Phase is the result of a load or run phase.
type Phase struct {
	Name           string              `json:"name"` // "load" or "run"
	Ops            int64               `json:"ops"`
	Errors         int64               `json:"errors"`
	FirstError     string              `json:"first_error,omitempty"`
	Seconds        float64             `json:"seconds"`
	OpsPerSec      float64             `json:"ops_per_sec"`
	CloseSeconds   float64             `json:"close_seconds"` // closing (flushing) the engine after the phase
	ByOp           map[string]*OpStats `json:"by_op"`
	Records        int64               `json:"records"`       // records existing after the phase
	LogicalBytes   int64               `json:"logical_bytes"` // sum of key+value sizes of the live records
	DiskBytes      int64               `json:"disk_bytes"`    // allocated bytes under the data dir after closing
	DiskApparent   int64               `json:"disk_apparent_bytes"`
	SpaceAmp       float64             `json:"space_amp"`        // DiskBytes / LogicalBytes
	UserWriteBytes int64               `json:"user_write_bytes"` // key+value bytes written by inserts/updates
	// Dirtied is write_bytes less cancelled_write_bytes of /proc/self/io
	// over the phase: what the process dirtied in the page cache, not what
	// reached the device. Linux counts a whole folio each time one turns
	// dirty, so a page written, flushed and written again counts twice
	// (synced runs overstate), and a 1 KiB write into a file cached in
	// large folios (written in large pieces, or read with readahead) counts
	// the folio: on Linux 6.18 ext4, 100,000 random 1 KiB overwrites of a
	// file written in 1 MiB pieces counted 42-44 GiB where the device
	// wrote 390 MiB. BlockWriteBytes (Config.BlockCounters) is what the
	// device wrote.
	Dirtied        int64   `json:"dirtied_bytes"`
	DeviceRead     int64   `json:"device_read_bytes"`
	WriteAmp       float64 `json:"write_amp"` // Dirtied / UserWriteBytes
	IOAccountingOK bool    `json:"io_accounting_ok"`
	// With Config.BlockCounters: what the data directory's block device
	// wrote from the start of the phase until the engine was closed and
	// its dirty pages written back (the whole device, every process).
	BlockDevice     string `json:"block_device,omitempty"`
	BlockWriteBytes int64  `json:"block_write_bytes,omitempty"`
	BlockWriteIOs   int64  `json:"block_write_ios,omitempty"`
	BlockFlushes    int64  `json:"block_flushes,omitempty"`
	// BlockBusy is the fraction of the timed window (not the close) in
	// which the device had requests in flight: near 1, the device, not
	// the engine, set the pace.
	BlockBusy     float64 `json:"block_busy,omitempty"`
	BlockWriteAmp float64 `json:"block_write_amp,omitempty"` // BlockWriteBytes / UserWriteBytes
	// EngineCounters are the differences, over the timed window, of
	// the engine's own counters (engine.Counters), for engines that
	// have them.
	EngineCounters  map[string]float64 `json:"engine_counters,omitempty"`
	PeakRSSBytes    int64              `json:"peak_rss_bytes"` // process peak so far
	GoHeapInuseByte uint64             `json:"go_heap_inuse_bytes"`
	// CPU the process used while the clients ran (getrusage; not closing):
	// the engine's background work included, the harness's own too.
	CPUUserSeconds float64 `json:"cpu_user_seconds"`
	CPUSysSeconds  float64 `json:"cpu_sys_seconds"`
	CPUUsPerOp     float64 `json:"cpu_us_per_op"` // (user + sys) / Ops
}

// Result is one run of one engine on one workload.
type Result struct {
	Engine       string             `json:"engine"`
	Workload     string             `json:"workload"`
	Distribution string             `json:"distribution"`
	Proportions  map[string]float64 `json:"proportions"`
	Records      int64              `json:"records"`
	Threads      int                `json:"threads"`
	FieldCount   int                `json:"field_count"`
	FieldLength  int                `json:"field_length"`
	ValueDist    string             `json:"value_dist"` // canonical ValueDist ("" in older results: fixed)
	ValueSize    int                `json:"value_size"` // exact for fixed and ycsb (the framed record, 1140 B for 10 x 100 B), the rounded mean for uniform and lognormal
	Sync         bool               `json:"sync"`
	Run          int                `json:"run,omitempty"` // repetition number
	Command      string             `json:"command,omitempty"`
	Commit       string             `json:"commit,omitempty"` // git commit of the tree run ("+dirty" if tracked files are modified)
	Start        time.Time          `json:"start"`
	GoVersion    string             `json:"go_version"`
	NumCPU       int                `json:"num_cpu"`
	Phases       []*Phase           `json:"phases"`
	PeakRSSBytes int64              `json:"peak_rss_bytes"`

	// Sizes holds the value size of every record after the last phase
	// (uniform and lognormal only), for Config.ExistingSizes of the next
	// Execute on the same data.
	Sizes *RecordSizes `json:"-"`
}
