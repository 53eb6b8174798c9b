// Package runner runs a YCSB load and run phase against one engine and
// measures throughput, latency, space and write amplification and memory.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/heapkv/heapkv/bench/engine"
	"github.com/heapkv/heapkv/bench/ycsb"
)

// Config is one run: one engine, one workload.
type Config struct {
	Engine   string
	Workload string // a-f, or "custom" with Mix
	Mix      string // custom mix, e.g. "read=0.9,update=0.1" (overrides the workload's)
	// Distribution overrides the workload's request distribution
	// (uniform, zipfian, latest) when set.
	Distribution  string
	MaxScanLength int // 0: 100

	Records  int64         // records loaded
	Ops      int64         // run-phase operations (0 with Duration 0: Records)
	Duration time.Duration // run-phase length; with Ops, whichever ends first
	Threads  int

	FieldCount  int // record = FieldCount x FieldLength bytes
	FieldLength int
	// ValueDist is the value-size distribution (ParseValueDist): "fixed"
	// or "" (FieldCount x FieldLength bytes), "uniform:MIN-MAX",
	// "lognormal:MEDIAN,SIGMA" or "ycsb" (FieldCount named fields of
	// FieldLength bytes with their length prefixes). Every insert and
	// update draws its own size.
	ValueDist string
	Sync      bool
	// BlockCounters makes each phase report what the block device holding
	// Dir wrote (blockdev.go): sync(2) before the clients start and after
	// the engine is closed, outside the timed window.
	BlockCounters bool

	// Existing and ExistingLogicalBytes describe the data already in Dir
	// when the load phase does not run (from the last phase of the
	// previous result); zero means Records records of the configured size
	// (for uniform and lognormal: of the distribution's mean size).
	Existing             int64
	ExistingLogicalBytes int64
	// ExistingSizes is the previous result's Sizes on the same data (nil
	// for fixed and ycsb). Without it, the value sizes of records that
	// existed before this Execute are unknown, and logical bytes assume
	// an update replaces a value of the distribution's mean size.
	ExistingSizes *RecordSizes

	Dir  string // data directory (must not hold another engine's data)
	Load bool   // run the load phase
	Run  bool   // run the run phase
	Seed uint64

	// Progress receives progress output (nil: none); Terminal selects a
	// \r progress bar instead of one line per second.
	Progress io.Writer
	Terminal bool
	// ProgressEvery is the progress interval (0: 1s).
	ProgressEvery time.Duration
}

// ValueSize is the record payload FieldCount x FieldLength in bytes: the
// value size of the "fixed" distribution (see ValueDist for the others).
func (c *Config) ValueSize() int { return c.FieldCount * c.FieldLength }

// Validate checks the configuration and returns the parsed value-size
// distribution.
func (c *Config) Validate() (*ValueDist, error) {
	if c.FieldCount < 1 || c.FieldLength < 1 {
		return nil, errors.New("runner: field count and length must be positive")
	}
	if c.Records < 1 {
		return nil, errors.New("runner: need at least one record")
	}
	vd, err := ParseValueDist(c.ValueDist, c.FieldCount, c.FieldLength)
	if err != nil {
		return nil, fmt.Errorf("runner: -valuedist: %w", err)
	}
	if _, err := workloadOf(*c); err != nil {
		return nil, err
	}
	if _, err := engine.Lookup(c.Engine); err != nil {
		return nil, err
	}
	return vd, nil
}

// Execute runs the configured phases.
func Execute(ctx context.Context, c Config) (*Result, error) {
	if c.Threads < 1 {
		c.Threads = 1
	}
	vd, err := c.Validate()
	if err != nil {
		return nil, err
	}
	w, err := workloadOf(c)
	if err != nil {
		return nil, err
	}
	res := &Result{
		Engine: c.Engine, Workload: w.Name, Distribution: string(w.Distribution),
		Proportions: map[string]float64{},
		Records:     c.Records, Threads: c.Threads, FieldCount: c.FieldCount, FieldLength: c.FieldLength,
		ValueDist: vd.String(), ValueSize: int(math.Round(vd.Mean())), Sync: c.Sync, Start: time.Now().UTC(),
		GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(),
	}
	for op, p := range w.Proportions {
		if p > 0 {
			res.Proportions[ycsb.Op(op).String()] = p
		}
	}
	st := &state{c: c, w: w, ks: ycsb.NewKeyspace(0), vd: vd, assumed: int64(math.Round(vd.Mean()))}
	if !vd.Constant() {
		// Record sizes vary: track them, and serialise writes to the same
		// record so that the tracked size is the one the engine kept.
		st.locks = make([]paddedMutex, recordLocks)
		st.sizes = &RecordSizes{}
		if !c.Load && c.ExistingSizes != nil {
			st.sizes = c.ExistingSizes
		}
		res.Sizes = st.sizes
	}
	if c.Load {
		p, err := st.phase(ctx, "load")
		if err != nil {
			return res, err
		}
		res.Phases = append(res.Phases, p)
	} else {
		n, lb := c.Existing, c.ExistingLogicalBytes
		if n == 0 {
			n = c.Records
		}
		if lb == 0 {
			// Only the count is known: assume average keys and, for
			// uniform and lognormal, values of the mean size.
			lb = n * (avgKeyLen + st.assumed)
		}
		st.ks = ycsb.NewKeyspace(uint64(n))
		st.logicalBytes.Store(lb)
	}
	if c.Run {
		p, err := st.phase(ctx, "run")
		if err != nil {
			return res, err
		}
		res.Phases = append(res.Phases, p)
	}
	res.PeakRSSBytes = PeakRSS()
	return res, nil
}

// openEngine opens the engine of a phase (tests wrap it).
var openEngine = engine.Open

// avgKeyLen approximates YCSB key lengths ("user" + up to 19 digits) when
// the load phase did not run in this process.
const avgKeyLen = 23

func workloadOf(c Config) (ycsb.Workload, error) {
	var w ycsb.Workload
	if c.Workload == "" || c.Workload == "custom" {
		w = ycsb.Workload{Name: "CUSTOM", Distribution: ycsb.DistZipfian, MaxScanLength: 100}
		if c.Mix == "" {
			return w, errors.New("runner: custom workload needs a mix")
		}
	} else {
		var err error
		if w, err = ycsb.Standard(c.Workload); err != nil {
			return w, err
		}
	}
	if c.Mix != "" {
		p, err := ycsb.ParseMix(c.Mix)
		if err != nil {
			return w, err
		}
		w.Proportions = p
		if c.Workload != "" && c.Workload != "custom" {
			w.Name += "+mix"
		}
	}
	if c.Distribution != "" {
		w.Distribution = ycsb.Distribution(c.Distribution)
	}
	if c.MaxScanLength > 0 {
		w.MaxScanLength = c.MaxScanLength
	}
	return w, nil
}

type state struct {
	c  Config
	w  ycsb.Workload
	ks *ycsb.Keyspace
	vd *ValueDist

	logicalBytes atomic.Int64

	// Variable value sizes only (nil for fixed and ycsb): the size of
	// every record, and locks that make a record's engine write and size
	// update atomic. assumed is the size of a record whose size is
	// unknown (the distribution's mean; exact for fixed and ycsb).
	sizes   *RecordSizes
	locks   []paddedMutex
	assumed int64
}

type client struct {
	r      *rand.Rand
	vd     *ValueDist
	hist   [ycsb.NumOps]*hdrhistogram.Histogram
	errs   [ycsb.NumOps]int64
	first  error
	val    []byte
	key    []byte
	wbytes int64
	seed   uint64
}

func newClient(seed uint64, vd *ValueDist) *client {
	cl := &client{r: rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)), vd: vd, val: make([]byte, vd.Max()), seed: seed | 1}
	for i := range cl.hist {
		// 100 ns .. 1 h at 3 significant digits, in ns.
		cl.hist[i] = hdrhistogram.New(100, int64(time.Hour), 3)
	}
	return cl
}

// value draws the next value's size and returns a value of that size in
// cl.val, filled with fresh pseudo-random (incompressible) bytes (and the
// field framing for ycsb).
func (cl *client) value() []byte {
	v := cl.fill(cl.vd.Draw(cl.r))
	cl.vd.frame(v)
	return v
}

// fill writes fresh pseudo-random (incompressible) bytes into cl.val[:n].
func (cl *client) fill(n int) []byte {
	s := cl.r.Uint64() | 1
	b := cl.val[:n]
	for len(b) >= 8 {
		s ^= s << 13
		s ^= s >> 7
		s ^= s << 17
		b[0], b[1], b[2], b[3] = byte(s), byte(s>>8), byte(s>>16), byte(s>>24)
		b[4], b[5], b[6], b[7] = byte(s>>32), byte(s>>40), byte(s>>48), byte(s>>56)
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(s >> (8 * i))
	}
	return cl.val[:n]
}

func (cl *client) record(op ycsb.Op, start time.Time, err error) {
	d := time.Since(start)
	if err != nil {
		cl.errs[op]++
		if cl.first == nil {
			cl.first = fmt.Errorf("%v: %w", op, err)
		}
		return
	}
	_ = cl.hist[op].RecordValue(int64(d))
}

func (st *state) phase(ctx context.Context, name string) (*Phase, error) {
	c := st.c
	db, err := openEngine(c.Engine, c.Dir, c.Sync)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", c.Engine, err)
	}
	var blk0 BlockCounters
	if c.BlockCounters {
		syncAll()
		blk0 = ReadBlockCounters(c.Dir)
	}
	io0 := ReadIO()
	counters0, err := engineCounters(db)
	if err != nil {
		db.Close()
		return nil, err
	}
	var done atomic.Int64
	var total int64
	if name == "load" {
		total = c.Records
	} else {
		total = c.Ops
		if total == 0 && c.Duration == 0 {
			total = c.Records
		}
	}
	var loadNext atomic.Int64
	var opsLeft atomic.Int64
	opsLeft.Store(total)
	unbounded := total == 0

	// Build the clients (and their key choosers, whose zipfian zeta sum
	// is O(records)) before the clock starts.
	clients := make([]*client, c.Threads)
	keys := make([]*ycsb.KeyChooser, c.Threads)
	for t := range clients {
		clients[t] = newClient(c.Seed+uint64(t)*7919+uint64(len(name)), st.vd)
		if name == "run" {
			// Size the zipfian for the inserts the run may make, as YCSB does.
			expInserts := uint64(float64(c.Ops) * st.w.Proportions[ycsb.OpInsert] * 2)
			if keys[t], err = ycsb.NewKeyChooser(st.w.Distribution, st.ks, expInserts); err != nil {
				db.Close()
				return nil, err
			}
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deadline time.Time
	if name == "run" && c.Duration > 0 {
		deadline = time.Now().Add(c.Duration)
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	var wg sync.WaitGroup
	start := time.Now()
	user0, sys0 := CPUTime()
	stopProgress := st.progress(name, start, &done, total, deadline)
	for t, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if name == "load" {
				st.loadClient(ctx, db, cl, &loadNext, &done)
			} else {
				st.runClient(ctx, db, cl, keys[t], &opsLeft, unbounded, &done)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var blkEnd BlockCounters // when the clients stopped: the device's busy time
	if c.BlockCounters {
		blkEnd = ReadBlockCounters(c.Dir)
	}
	user1, sys1 := CPUTime()
	stopProgress()
	counters1, err := engineCounters(db)
	if err != nil {
		db.Close()
		return nil, err
	}

	closeStart := time.Now()
	closeErr := db.Close()
	closeSecs := time.Since(closeStart).Seconds()
	io1 := ReadIO()
	var blk1 BlockCounters
	if c.BlockCounters {
		syncAll()
		blk1 = ReadBlockCounters(c.Dir)
	}

	p := &Phase{Name: name, Seconds: elapsed.Seconds(), CloseSeconds: closeSecs, ByOp: map[string]*OpStats{},
		CPUUserSeconds: (user1 - user0).Seconds(), CPUSysSeconds: (sys1 - sys0).Seconds()}
	var hist [ycsb.NumOps]*hdrhistogram.Histogram
	var errs [ycsb.NumOps]int64
	for _, cl := range clients {
		for op := range hist {
			if hist[op] == nil {
				hist[op] = cl.hist[op]
			} else {
				hist[op].Merge(cl.hist[op])
			}
			errs[op] += cl.errs[op]
		}
		p.UserWriteBytes += cl.wbytes
		if cl.first != nil && p.FirstError == "" {
			p.FirstError = cl.first.Error()
		}
	}
	for op, h := range hist {
		n := h.TotalCount()
		if n == 0 && errs[op] == 0 {
			continue
		}
		us := func(v int64) float64 { return float64(v) / 1e3 }
		p.ByOp[ycsb.Op(op).String()] = &OpStats{
			Count: n, Errors: errs[op], MeanUs: h.Mean() / 1e3,
			P50Us: us(h.ValueAtPercentile(50)), P95Us: us(h.ValueAtPercentile(95)),
			P99Us: us(h.ValueAtPercentile(99)), P999Us: us(h.ValueAtPercentile(99.9)),
			MaxUs: us(h.Max()),
		}
		p.Ops += n
		p.Errors += errs[op]
	}
	if p.Seconds > 0 {
		p.OpsPerSec = float64(p.Ops) / p.Seconds
	}
	if p.Ops > 0 {
		p.CPUUsPerOp = (p.CPUUserSeconds + p.CPUSysSeconds) * 1e6 / float64(p.Ops)
	}
	p.Records = int64(st.ks.Limit())
	p.LogicalBytes = st.logicalBytes.Load()
	p.DiskBytes, p.DiskApparent, err = DiskUsage(c.Dir)
	if err != nil {
		return p, err
	}
	if p.LogicalBytes > 0 {
		p.SpaceAmp = float64(p.DiskBytes) / float64(p.LogicalBytes)
	}
	p.IOAccountingOK = io0.OK && io1.OK
	if p.IOAccountingOK {
		p.Dirtied = (io1.WriteBytes - io1.CancelledWriteBytes) - (io0.WriteBytes - io0.CancelledWriteBytes)
		p.DeviceRead = io1.ReadBytes - io0.ReadBytes
		if p.UserWriteBytes > 0 {
			p.WriteAmp = float64(p.Dirtied) / float64(p.UserWriteBytes)
		}
	}
	if blk0.OK && blk1.OK && blk0.Device == blk1.Device {
		p.BlockDevice = blk1.Device
		p.BlockWriteBytes = (blk1.WriteSectors - blk0.WriteSectors) * 512
		p.BlockWriteIOs = blk1.WriteIOs - blk0.WriteIOs
		p.BlockFlushes = blk1.Flushes - blk0.Flushes
		if blkEnd.Device == blk0.Device && elapsed > 0 {
			p.BlockBusy = float64(blkEnd.BusyMillis-blk0.BusyMillis) / float64(elapsed.Milliseconds())
		}
		if p.UserWriteBytes > 0 {
			p.BlockWriteAmp = float64(p.BlockWriteBytes) / float64(p.UserWriteBytes)
		}
	}
	p.EngineCounters = counterDeltas(counters0, counters1)
	p.PeakRSSBytes = PeakRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.GoHeapInuseByte = ms.HeapInuse
	if closeErr != nil {
		return p, fmt.Errorf("close %s: %w", c.Engine, closeErr)
	}
	return p, nil
}

// engineCounters reads db's own counters if it has any (nil if not).
func engineCounters(db engine.DB) (map[string]float64, error) {
	c, ok := db.(engine.Counters)
	if !ok {
		return nil, nil
	}
	m, err := c.Counters()
	if err != nil {
		return nil, fmt.Errorf("engine counters: %w", err)
	}
	return m, nil
}

// counterDeltas is after less before, for the counters both have.
func counterDeltas(before, after map[string]float64) map[string]float64 {
	if before == nil || after == nil {
		return nil
	}
	d := make(map[string]float64, len(after))
	for k, v := range after {
		if b, ok := before[k]; ok {
			d[k] = v - b
		}
	}
	return d
}

func (st *state) loadClient(ctx context.Context, db engine.DB, cl *client, next *atomic.Int64, done *atomic.Int64) {
	for ctx.Err() == nil {
		k := next.Add(1) - 1
		if k >= st.c.Records {
			return
		}
		st.insert(db, cl, uint64(k))
		done.Add(1)
	}
}

func (st *state) insert(db engine.DB, cl *client, keynum uint64) {
	cl.key = ycsb.AppendKeyName(cl.key[:0], keynum)
	v := cl.value()
	t := time.Now()
	err := db.Insert(cl.key, v)
	cl.record(ycsb.OpInsert, t, err)
	if err == nil {
		cl.wbytes += int64(len(cl.key) + len(v))
		st.logicalBytes.Add(int64(len(cl.key) + len(v)))
		if st.sizes != nil {
			st.sizes.swap(keynum, int32(len(v))) // before Ack: no update can race
		}
	}
	st.ks.Ack(keynum)
}

func (st *state) runClient(ctx context.Context, db engine.DB, cl *client, keys *ycsb.KeyChooser, left *atomic.Int64, unbounded bool, done *atomic.Int64) {
	ops := ycsb.NewOpChooser(st.w.Proportions)
	maxScan := st.w.MaxScanLength
	for ctx.Err() == nil {
		if !unbounded && left.Add(-1) < 0 {
			return
		}
		switch op := ops.Next(cl.r); op {
		case ycsb.OpRead:
			cl.key = ycsb.AppendKeyName(cl.key[:0], keys.Next(cl.r))
			t := time.Now()
			_, err := db.Read(cl.key)
			cl.record(op, t, err)
		case ycsb.OpUpdate:
			k := keys.Next(cl.r)
			cl.key = ycsb.AppendKeyName(cl.key[:0], k)
			v := cl.value()
			mu := st.lockRecord(k) // the wait is not latency
			t := time.Now()
			err := db.Update(cl.key, v)
			cl.record(op, t, err)
			if err == nil {
				st.updated(cl, k, len(v))
			}
			unlock(mu)
		case ycsb.OpInsert:
			st.insert(db, cl, st.ks.NextInsert())
		case ycsb.OpScan:
			cl.key = ycsb.AppendKeyName(cl.key[:0], keys.Next(cl.r))
			n := 1 + cl.r.IntN(maxScan)
			t := time.Now()
			_, err := db.Scan(cl.key, n)
			cl.record(op, t, err)
		case ycsb.OpRMW:
			k := keys.Next(cl.r)
			cl.key = ycsb.AppendKeyName(cl.key[:0], k)
			t := time.Now()
			_, err := db.Read(cl.key)
			if err == nil {
				v := cl.value() // a new size, like any update
				var mu *sync.Mutex
				if st.locks != nil {
					w := time.Now()
					mu = st.lockRecord(k)
					t = t.Add(time.Since(w)) // the wait is not latency
				}
				err = db.Update(cl.key, v)
				if err == nil {
					st.updated(cl, k, len(v))
				}
				unlock(mu)
			}
			cl.record(op, t, err)
		}
		done.Add(1)
	}
}

// SmokeConfig is a tiny configuration that runs in well under a second
// per engine and workload (the CI smoke mode); set Engine, Workload, Dir.
func SmokeConfig() Config {
	return Config{
		Records: 500, Ops: 500, Threads: 4, FieldCount: 4, FieldLength: 100,
		MaxScanLength: 20, Load: true, Run: true, Seed: 1,
	}
}
