package promstats_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/promstats"
)

// scrape fetches url and parses the text exposition.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams, resp.StatusCode
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil || len(f.Metric) != 1 {
		t.Fatalf("no single metric %s", name)
	}
	m := f.Metric[0]
	if len(m.Label) != 1 || m.Label[0].GetName() != "db" || m.Label[0].GetValue() != "test" {
		t.Fatalf("%s labels %v", name, m.Label)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("%s: no value", name)
	return 0
}

// The collector, scraped over HTTP on loopback, reports counters, gauges
// and latency histograms that move as operations happen; a closed
// database fails the scrape instead of reporting zeros.
func TestCollectorScrapedOverHTTP(t *testing.T) {
	db, err := heapkv.Open(t.TempDir(), &heapkv.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(promstats.NewCollector(db, prometheus.Labels{"db": "test"}))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	put := func(from, to int) {
		for i := from; i < to; i++ {
			if err := db.Put(fmt.Appendf(nil, "k%04d", i), make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 10)
	fams, code := scrape(t, srv.URL)
	if code != http.StatusOK {
		t.Fatalf("scrape: HTTP %d", code)
	}
	for name, want := range map[string]float64{
		"heapkv_commits_total":             10,
		"heapkv_keys":                      10,
		"heapkv_write_latency_seconds":     10,
		"heapkv_heap_values_written_total": 10,
		"heapkv_heap_written_bytes_total":  10000,
		"heapkv_replicas":                  1,
		"heapkv_disk_full":                 0,
	} {
		if got := value(t, fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if value(t, fams, "heapkv_index_memtable_bytes") <= 0 {
		t.Error("the index's memtables take no memory")
	}
	syncs := value(t, fams, "heapkv_sync_latency_seconds")
	if syncs == 0 {
		t.Error("no durable write was timed")
	}
	h := fams["heapkv_write_latency_seconds"].Metric[0].Histogram
	if h.GetSampleSum() <= 0 || len(h.Bucket) == 0 || h.Bucket[len(h.Bucket)-1].GetCumulativeCount() != 10 {
		t.Errorf("write latency histogram: %v", h)
	}

	put(10, 25)
	if _, err := db.Get([]byte("k0001")); err != nil {
		t.Fatal(err)
	}
	fams, _ = scrape(t, srv.URL)
	if got := value(t, fams, "heapkv_commits_total"); got != 25 {
		t.Errorf("commits after 15 more: %v", got)
	}
	if got := value(t, fams, "heapkv_gets_total"); got != 1 {
		t.Errorf("gets: %v", got)
	}
	if got := value(t, fams, "heapkv_sync_latency_seconds"); got <= syncs {
		t.Errorf("sync latency count did not move: %v then %v", syncs, got)
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, code := scrape(t, srv.URL); code == http.StatusOK {
		t.Error("a scrape of a closed database succeeded")
	}
}
