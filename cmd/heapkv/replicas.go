package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/heapkv/heapkv"
)

// progressEvery is how often attach and scrub report progress on a terminal.
var progressEvery = 250 * time.Millisecond

func replicaFields(r heapkv.ReplicaStatus) map[string]any {
	return map[string]any{
		"id": r.ID, "path": r.Path, "state": r.State.String(), "stale_lsn": r.StaleLSN,
		"detached": r.Detached, "available": r.Available, "full_copy": r.FullCopy,
		"blocks_to_sync": r.BlocksToSync, "blocks_synced": r.BlocksSynced,
		"blocks_copied": r.BlocksCopied, "bytes_copied": r.BytesCopied, "source": r.Source,
		"cause": r.Cause, "read_errors": r.ReadErrors, "bad_copies": r.BadCopies, "repairs": r.Repairs,
	}
}

func cmdReplicas(s *shell, _ []word) (result, error) {
	rs := s.db.Replicas()
	if rs == nil {
		return result{}, heapkv.ErrClosed
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tAVAIL\tTO SYNC\tCOPIED\tERRORS\tBAD\tREPAIRED\tPATH\tNOTE")
	list := make([]map[string]any, 0, len(rs))
	for _, r := range rs {
		toSync := "-"
		switch {
		case r.State == heapkv.ReplicaInSync:
		case r.FullCopy || r.BlocksToSync < 0:
			toSync = "all"
		default:
			toSync = strconv.FormatInt(r.BlocksToSync, 10)
		}
		copied := "-"
		if r.BytesCopied > 0 || r.BlocksCopied > 0 {
			copied = humanBytes(r.BytesCopied)
		}
		var note []string
		if r.Detached && !strings.Contains(r.Cause, "detach") {
			note = append(note, "detached")
		}
		if r.State != heapkv.ReplicaInSync && r.StaleLSN > 0 {
			note = append(note, fmt.Sprintf("stale since lsn %d", r.StaleLSN))
		}
		if r.Source >= 0 && r.State == heapkv.ReplicaResyncing {
			note = append(note, fmt.Sprintf("copying from %d", r.Source))
		}
		if r.Cause != "" {
			note = append(note, r.Cause)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.ID, r.State, yesNo(r.Available),
			toSync, copied, r.ReadErrors, r.BadCopies, r.Repairs, r.Path, strings.Join(note, "; "))
		list = append(list, replicaFields(r))
	}
	tw.Flush()
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return result{text: strings.Join(lines, "\n"), fields: map[string]any{"replicas": list}}, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// replicaID parses a replica id argument and checks that it exists.
func (s *shell) replicaID(name string, w word) (heapkv.ReplicaStatus, error) {
	id, err := strconv.Atoi(w.text)
	rs := s.db.Replicas()
	if err != nil || id < 0 || id >= len(rs) {
		shown := w.text
		if err != nil {
			shown = formatBytes(w.text, 20)
		}
		return heapkv.ReplicaStatus{}, fmt.Errorf("%s: no replica %s (there are %d: ids 0 to %d; see replicas)",
			name, shown, len(rs), len(rs)-1)
	}
	return rs[id], nil
}

func cmdDetach(s *shell, args []word) (result, error) {
	r, err := s.replicaID("detach", args[0])
	if err != nil {
		return result{}, err
	}
	if err := s.db.DetachReplica(r.ID); err != nil {
		return result{}, fmt.Errorf("detach %d: %w", r.ID, err)
	}
	return result{text: fmt.Sprintf("OK (replica %d detached; \"attach %d\" resyncs it)", r.ID, r.ID),
		fields: map[string]any{"id": r.ID}}, nil
}

func cmdAttach(s *shell, args []word) (result, error) {
	r, err := s.replicaID("attach", args[0])
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.db.AttachReplica(s.ctx, r.ID) }()
	p := s.progress()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
wait:
	for {
		select {
		case err = <-done:
			p.clear()
			break wait
		case <-tick.C:
			if rs := s.db.Replicas(); r.ID < len(rs) {
				p.show(s.attachProgress(rs[r.ID], start))
			}
		}
	}
	if err != nil {
		if s.ctx.Err() != nil {
			return result{}, fmt.Errorf("attach %d: cancelled (Ctrl-C); the blocks copied so far are kept, attach again to resume", r.ID)
		}
		return result{}, fmt.Errorf("attach %d: %w", r.ID, err)
	}
	rs := s.db.Replicas()
	var st heapkv.ReplicaStatus
	if r.ID < len(rs) {
		st = rs[r.ID]
	}
	el := time.Since(start)
	text := fmt.Sprintf("OK (replica %d %s: copied %d blocks, %s in %s)", r.ID, st.State,
		st.BlocksCopied, humanBytes(st.BytesCopied), el.Round(time.Millisecond))
	f := replicaFields(st)
	f["seconds"] = el.Seconds()
	return result{text: text, fields: f}, nil
}

// attachProgress describes a running resync: a bar when its size is known,
// with an ETA from the rate so far.
func (s *shell) attachProgress(r heapkv.ReplicaStatus, start time.Time) string {
	var done, total int64
	if r.FullCopy || r.LastFullCopy || r.BlocksToSync < 0 {
		if st, err := s.db.Stats(); err == nil {
			done, total = r.BytesCopied, st.HeapAllocBytes
		}
	} else {
		done, total = r.BlocksCopied, r.BlocksCopied+r.BlocksToSync
	}
	return fmt.Sprintf("attach %d: %s, %s copied", r.ID, bar(done, total, time.Since(start)), humanBytes(r.BytesCopied))
}

// bar renders done of total as "[=====>    ]  42% ETA 3s"; without a total,
// only the elapsed time.
func bar(done, total int64, elapsed time.Duration) string {
	if total <= 0 {
		return fmt.Sprintf("%s elapsed", elapsed.Round(time.Second))
	}
	done = min(done, total)
	const width = 24
	fill := int(done * width / total)
	b := strings.Repeat("=", fill)
	if fill < width {
		b += ">" + strings.Repeat(" ", width-fill-1)
	}
	eta := "?"
	if done > 0 {
		eta = (time.Duration(float64(elapsed) * float64(total-done) / float64(done))).Round(time.Second).String()
	}
	return fmt.Sprintf("[%s] %3d%% ETA %s", b, done*100/total, eta)
}

func cmdScrub(s *shell, _ []word) (result, error) {
	start := time.Now()
	var total int64
	if st, err := s.db.Stats(); err == nil {
		total = st.HeapStoredBytes * int64(max(st.ReplicasInSync, 1))
	}
	type out struct {
		rep *heapkv.ScrubReport
		err error
	}
	done := make(chan out, 1)
	go func() {
		rep, err := s.db.Scrub(s.ctx)
		done <- out{rep, err}
	}()
	p := s.progress()
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var o out
wait:
	for {
		select {
		case o = <-done:
			p.clear()
			break wait
		case <-tick.C:
			if st, err := s.db.Stats(); err == nil {
				p.show(fmt.Sprintf("scrub: %s, %d values, %s read", bar(st.ScrubBytes, total, time.Since(start)),
					st.ScrubValues, humanBytes(st.ScrubBytes)))
			}
		}
	}
	if o.rep == nil {
		if s.ctx.Err() != nil {
			return result{}, fmt.Errorf("scrub: cancelled (Ctrl-C)")
		}
		return result{}, fmt.Errorf("scrub: %w", o.err)
	}
	return result{text: o.rep.String(), fields: map[string]any{"report": o.rep}}, o.err
}

func cmdCompact(s *shell, args []word) (result, error) {
	cluster := len(args) > 0 && args[0].text == "cluster"
	if len(args) > 0 && !cluster {
		return result{}, fmt.Errorf("compact: unknown argument %q (want cluster or nothing)", args[0].text)
	}
	o := &heapkv.CompactOptions{Cluster: cluster}
	if len(args) > 1 && args[1].text != "" { // "": from the first key
		o.ClusterLowerBound = []byte(args[1].text)
	}
	if len(args) > 2 {
		o.ClusterUpperBound = []byte(args[2].text)
	}
	p := s.progress()
	o.Progress = func(r heapkv.CompactResult) {
		p.show(fmt.Sprintf("compact: %d values (%s) moved, %d segments emptied", r.ValuesMoved, humanBytes(r.BytesMoved), r.SegmentsMoved))
	}
	res, err := s.db.Compact(s.ctx, o)
	p.clear()
	if err != nil {
		if s.ctx.Err() != nil {
			return result{}, fmt.Errorf("compact: cancelled (Ctrl-C); what was moved stays moved")
		}
		return result{}, err
	}
	var b strings.Builder
	if cluster {
		fmt.Fprintf(&b, "rewrote %d values (%s) in key order", res.ValuesMoved, humanBytes(res.BytesMoved))
	} else {
		fmt.Fprintf(&b, "moved %d values (%s) out of %d sparse segments", res.ValuesMoved, humanBytes(res.BytesMoved), res.SegmentsMoved)
	}
	if res.Conflicts > 0 {
		fmt.Fprintf(&b, " (%d batches retried: keys written meanwhile)", res.Conflicts)
	}
	fmt.Fprintf(&b, "\nheap file %s -> %s", humanBytes(res.FileBytesBefore), humanBytes(res.FileBytesAfter))
	if res.AllocatedBytesBefore >= 0 {
		fmt.Fprintf(&b, ", on disk %s -> %s", humanBytes(res.AllocatedBytesBefore), humanBytes(res.AllocatedBytesAfter))
	}
	fmt.Fprintf(&b, " (%d segments given back, %d cut off the end)", res.SegmentsPunched, res.SegmentsCut)
	if res.Unsupported {
		b.WriteString("\nthis file system cannot punch holes or truncate: no space was given back")
	}
	return result{text: b.String(), fields: map[string]any{"compact": res}}, nil
}

// progress is a status line redrawn in place on a terminal; elsewhere it
// prints nothing, so scripts see only results.
type progress struct {
	s     *shell
	shown bool
}

func (s *shell) progress() *progress { return &progress{s: s} }

func (p *progress) show(line string) {
	if !p.s.interactive || p.s.json {
		return
	}
	if p.s.status == nil {
		p.s.status = &statusLine{w: p.s.errw}
	}
	p.s.status.show(line)
	p.shown = true
}

func (p *progress) clear() {
	if p.shown {
		p.s.status.clear()
		p.shown = false
	}
}

// statusLine is the shell's standard error shared by the progress line
// and the database's log lines: a log line written while a progress line
// is shown clears it, prints above it and draws it again, so the two never
// tear each other.
type statusLine struct {
	mu   sync.Mutex
	w    io.Writer
	line string // the progress line on screen, "" if none
}

// Write writes log output (whole lines: slog's handler writes a record at
// a time).
func (t *statusLine) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.line != "" {
		fmt.Fprint(t.w, "\r\x1b[K")
	}
	n, err := t.w.Write(p)
	if t.line != "" {
		fmt.Fprintf(t.w, "\r%s\x1b[K", t.line)
	}
	return n, err
}

func (t *statusLine) show(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.line = line
	fmt.Fprintf(t.w, "\r%s\x1b[K", line)
}

func (t *statusLine) clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.line != "" {
		fmt.Fprint(t.w, "\r\x1b[K")
		t.line = ""
	}
}

// statsTable renders st as aligned sections.
func statsTable(st heapkv.Stats) string {
	var b strings.Builder
	sec := func(name string) { fmt.Fprintf(&b, "%s\n", name) }
	row := func(k, format string, a ...any) { fmt.Fprintf(&b, "  %-20s %s\n", k, fmt.Sprintf(format, a...)) }
	pct := func(a, b int64) string {
		if b <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(b))
	}
	sec("data")
	row("keys", "%d", st.Keys)
	row("inline value bytes", "%s", humanBytes(st.InlineBytes))
	row("heap value bytes", "%s (stored %s)", humanBytes(st.HeapValueBytes), humanBytes(st.HeapStoredBytes))
	row("index", "%s", humanBytes(st.IndexBytes))
	sec("heap")
	row("file", "%s in %d segments", humanBytes(st.HeapFileBytes), st.HeapSegments)
	row("live", "%s (%s of file)", humanBytes(st.HeapLiveBytes), pct(st.HeapLiveBytes, st.HeapFileBytes))
	row("allocated", "%s", humanBytes(st.HeapAllocBytes))
	if st.HeapFileAllocatedBytes >= 0 {
		row("on disk", "%s (%s of file)", humanBytes(st.HeapFileAllocatedBytes), pct(st.HeapFileAllocatedBytes, st.HeapFileBytes))
	}
	row("segments", "%d empty (%d given back), %d at most half live", st.HeapEmptySegments, st.HeapPunchedSegments, st.HeapSparseSegments)
	row("pending free", "%s", humanBytes(st.HeapPendingFree))
	row("values written", "%d (%d compressed; %s -> %s)", st.HeapValuesWritten, st.HeapValuesCompressed,
		humanBytes(st.HeapWrittenBytes), humanBytes(st.HeapWrittenStored))
	sec("log")
	row("files", "%s in %d files", humanBytes(st.LogBytes), st.LogFiles)
	row("segments", "%d prepared, %d recycled since open", st.LogSegmentsPrepared, st.LogSegmentsRecycled)
	row("lsn", "%d (checkpoint %d)", st.LSN, st.CheckpointLSN)
	row("checkpoints", "%d", st.Checkpoints)
	sec("writes (this handle)")
	row("commits", "%d in %d groups (avg %.2f)", st.Commits, st.CommitGroups, st.AvgGroupSize)
	row("fsyncs", "%d", st.Fsyncs)
	row("gets", "%d", st.Gets)
	sec("transactions and readers")
	row("txn commits", "%d", st.TxnCommits)
	row("txn conflicts", "%d", st.TxnConflicts)
	row("open txns", "%d (tracking %d keys)", st.OpenTxns, st.TxnTrackedKeys)
	row("open snapshots", "%d", st.OpenSnapshots)
	row("open iterators", "%d", st.OpenIterators)
	if st.OpenTxns+st.OpenSnapshots+st.OpenIterators > 0 {
		row("oldest reader", "lsn %d, %s old", st.OldestReaderLSN, st.OldestReaderAge.Round(time.Millisecond))
	}
	sec("index caches")
	row("entry hits / misses", "%d / %d (%s hits), %s held", st.EntryCacheHits, st.EntryCacheMisses,
		pct(st.EntryCacheHits, st.EntryCacheHits+st.EntryCacheMisses), humanBytes(st.EntryCacheBytes))
	row("block hits / misses", "%d / %d (%s hits), %s held", st.IndexCacheHits, st.IndexCacheMisses,
		pct(st.IndexCacheHits, st.IndexCacheHits+st.IndexCacheMisses), humanBytes(st.IndexCacheBytes))
	row("lookups skipped", "%d (key filter)", st.KeyFilterSkips)
	sec("value cache")
	row("hits / misses", "%d / %d (%s hits)", st.ValueCacheHits, st.ValueCacheMisses,
		pct(st.ValueCacheHits, st.ValueCacheHits+st.ValueCacheMisses))
	row("evictions", "%d", st.ValueCacheEvictions)
	row("size", "%s", humanBytes(st.ValueCacheBytes))
	sec("replicas")
	row("in sync", "%d of %d", st.ReplicasInSync, st.Replicas)
	row("read repairs", "%d", st.ReadRepairs)
	scrub := "idle"
	if st.ScrubRunning {
		scrub = "running"
	}
	row("scrub", "%s (%d values, %s verified)", scrub, st.ScrubValues, humanBytes(st.ScrubBytes))
	if st.Failed != "" {
		sec("FAILED")
		row("cause", "%s", st.Failed)
	}
	return strings.TrimRight(b.String(), "\n")
}
