package expvarstats_test

import (
	"encoding/json"
	"expvar"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/expvarstats"
)

var runs atomic.Int64

// vars fetches /debug/vars from srv and returns the variable name.
func vars(t *testing.T, srv *httptest.Server, name string) map[string]any {
	t.Helper()
	resp, err := http.Get(srv.URL + "/debug/vars")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatalf("/debug/vars is not JSON: %v\n%s", err, b)
	}
	var v map[string]any
	if err := json.Unmarshal(all[name], &v); err != nil {
		t.Fatalf("variable %s: %v", name, err)
	}
	return v
}

// The published variable is served over HTTP and moves with the database.
func TestPublishedOverHTTP(t *testing.T) {
	db, err := heapkv.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// expvar names live as long as the process: one per run (-count).
	name := fmt.Sprintf("heapkv_test_%d", runs.Add(1))
	expvarstats.Publish(name, db)
	srv := httptest.NewServer(expvar.Handler())
	defer srv.Close()

	before := vars(t, srv, name)
	for i := range 10 {
		if err := db.Put([]byte{byte(i)}, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	after := vars(t, srv, name)
	if before["keys"] != 0.0 || after["keys"] != 10.0 || after["commits"].(float64) < 10 {
		t.Fatalf("keys %v then %v, commits %v", before["keys"], after["keys"], after["commits"])
	}
	if n := after["write_latency"].(map[string]any)["count"].(float64); n < 10 {
		t.Fatalf("write latency count %v after 10 writes", n)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if v := vars(t, srv, name); v["error"] == nil {
		t.Fatalf("a closed database's variable: %v", v)
	}
}
