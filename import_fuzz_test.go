package heapkv_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv"
	"github.com/heapkv/heapkv/dump"
)

// importOptions are small caches on a fresh MemFS: one fuzz input, one
// database.
func importOptions(mem vfs.FS) *heapkv.Options {
	o := &heapkv.Options{
		IndexCacheSize:    1 << 20,
		IndexMemTableSize: 1 << 20,
		EntryCacheSize:    -1,
		ValueCacheSize:    -1,
		DiskReserve:       -1,
		Logger:            slog.New(slog.DiscardHandler),
	}
	heapkv.SetFS(o, mem)
	return o
}

// FuzzImport: any input either fails with ErrBadDump and leaves no
// directory (nor its .partial) behind, or makes a database that holds
// exactly the entries a dump reader finds in it.
func FuzzImport(f *testing.F) {
	var good, incr bytes.Buffer
	w, _ := dump.NewWriter(&good, 7)
	wi, _ := dump.NewIncrementalWriter(&incr, 9, 7)
	for i := range 4 {
		k, v := fmt.Appendf(nil, "k%d", i), bytes.Repeat([]byte{byte('a' + i)}, 100*i)
		_ = w.Add(k, v)
		_ = wi.Keep(k)
	}
	_ = w.Close()
	_ = wi.Close()
	f.Add(good.Bytes())
	f.Add(incr.Bytes())
	f.Add(good.Bytes()[:good.Len()-3])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		mem := vfs.NewMem()
		_, err := heapkv.Import(t.Context(), "db", bytes.NewReader(b), importOptions(mem))
		if err != nil {
			if !errors.Is(err, heapkv.ErrBadDump) {
				t.Fatalf("import failed with %v, not ErrBadDump", err)
			}
			for _, p := range []string{"db", "db.partial"} {
				if _, serr := mem.Stat(p); !errors.Is(serr, fs.ErrNotExist) {
					t.Fatalf("a failed import left %s (%v)", p, serr)
				}
			}
			return
		}
		want := map[string]string{}
		r, _, err := dump.NewReader(bytes.NewReader(b), dump.Limits{MaxKey: heapkv.MaxKeySize, MaxValue: heapkv.MaxValueSize})
		if err != nil {
			t.Fatalf("imported, but the dump reader refuses it: %v", err)
		}
		for {
			k, v, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("imported, but the dump reader fails: %v", err)
			}
			want[string(k)] = string(v)
		}
		db, err := heapkv.Open("db", importOptions(mem))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		sameContents(t, "the imported database", contents(t, db), want)
	})
}
