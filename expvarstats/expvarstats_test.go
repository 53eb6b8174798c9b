package expvarstats_test

import (
	"encoding/json"
	"expvar"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/expvarstats"
)

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
	expvarstats.Publish("heapkv_test", db)
	srv := httptest.NewServer(expvar.Handler())
	defer srv.Close()

	before := vars(t, srv, "heapkv_test")
	for i := range 10 {
		if err := db.Put([]byte{byte(i)}, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	after := vars(t, srv, "heapkv_test")
	if before["keys"] != 0.0 || after["keys"] != 10.0 || after["commits"].(float64) < 10 {
		t.Fatalf("keys %v then %v, commits %v", before["keys"], after["keys"], after["commits"])
	}
	if n := after["write_latency"].(map[string]any)["count"].(float64); n < 10 {
		t.Fatalf("write latency count %v after 10 writes", n)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if v := vars(t, srv, "heapkv_test"); v["error"] == nil {
		t.Fatalf("a closed database's variable: %v", v)
	}
}
