package heapkv_test

// A database made by an earlier release, committed as a fixture, must open
// with today's code, pass Check and take new writes. The fixture
// testdata/format-v1-4k.tar.gz was made by the release before heap blocks
// smaller than 512 bytes (commit a254393: 4 KiB blocks and 2 KiB inline
// values by default) with one mirror, as was testdata/format-v1-512.tar.gz
// with the smallest blocks that release allowed (512 bytes), by running
// this file's test in that tree:
//
//	go test -run 'TestFormatFixture$' . -heapkv.makefixture=/tmp/fx
//	tar -C /tmp/fx/4k -czf testdata/format-v1-4k.tar.gz db
//	tar -C /tmp/fx/512 -czf testdata/format-v1-512.tar.gz db
//
// The test regenerates the writes (fixtureRounds) to know what the fixture
// holds.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

var makeFixture = flag.String("heapkv.makefixture", "", "make the format fixture in this directory instead of testing it")

// fixtureRounds returns the fixture's writes: round 0 puts every key,
// round 1 overwrites every third key and deletes every seventh. A nil
// value is a delete. Sizes cover empty, inline, one-block, odd and
// multi-block heap values; half of the values compress.
func fixtureRounds() [2]map[string][]byte {
	rng := rand.New(rand.NewPCG(0xF1, 0x4E))
	sizes := []int{0, 1, 100, 2048, 2049, 3000, 4096, 4100, 8191, 9000}
	val := func(i, round int) []byte {
		v := make([]byte, sizes[rng.IntN(len(sizes))])
		if rng.IntN(2) == 0 {
			for j := range v {
				v[j] = byte(rng.Uint32())
			}
		} else {
			for j := range v {
				v[j] = "compressible"[j%12]
			}
		}
		copy(v, fmt.Sprintf("%d/%d/", i, round))
		return v
	}
	var rounds [2]map[string][]byte
	rounds[0], rounds[1] = map[string][]byte{}, map[string][]byte{}
	for i := range fixtureKeys {
		rounds[0][fmt.Sprintf("fx%04d", i)] = val(i, 0)
	}
	for i := 0; i < fixtureKeys; i += 3 {
		rounds[1][fmt.Sprintf("fx%04d", i)] = val(i, 1)
	}
	for i := 0; i < fixtureKeys; i += 7 {
		rounds[1][fmt.Sprintf("fx%04d", i)] = nil
	}
	return rounds
}

// fixtureKeys is how many keys round 0 writes.
const fixtureKeys = 150

// fixtureOptions returns the options the fixture of the given block size
// (0: the release's default, 4 KiB) was made and is opened with.
func fixtureOptions(blockSize int) *heapkv.Options {
	return &heapkv.Options{
		BlockSize:      blockSize,
		Mirrors:        []string{"mirror"},
		LogSegmentSize: 256 << 10,
		DiskReserve:    -1,
		Logger:         slog.New(slog.DiscardHandler),
	}
}

func fixtureApply(t *testing.T, db *heapkv.DB, round map[string][]byte) {
	t.Helper()
	for k, v := range round {
		var err error
		if v == nil {
			err = db.Delete([]byte(k))
		} else {
			err = db.Put([]byte(k), v)
		}
		if err != nil {
			t.Fatalf("write %q: %v", k, err)
		}
	}
}

func fixtureWaitInSync(t *testing.T, db *heapkv.DB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		all := true
		for _, r := range db.Replicas() {
			all = all && r.State == heapkv.ReplicaInSync
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas not in sync after 30 s: %+v", db.Replicas())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFormatFixture(t *testing.T) {
	for _, fx := range []struct {
		name      string
		blockSize int // as made; 0 for the default (4 KiB)
		want      int // as opened
	}{{"4k", 0, 4096}, {"512", 512, 512}} {
		t.Run(fx.name, func(t *testing.T) {
			if *makeFixture != "" {
				makeFormatFixture(t, filepath.Join(*makeFixture, fx.name, "db"), fx.blockSize)
				return
			}
			testFormatFixture(t, "testdata/format-v1-"+fx.name+".tar.gz", fx.want)
		})
	}
}

// makeFormatFixture writes the fixture's rounds to a new database at path
// and closes it (which checkpoints).
func makeFormatFixture(t *testing.T, path string, blockSize int) {
	rounds := fixtureRounds()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := heapkv.Open(path, fixtureOptions(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	fixtureWaitInSync(t, db)
	fixtureApply(t, db, rounds[0])
	if err := db.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	fixtureApply(t, db, rounds[1])
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// testFormatFixture opens the fixture twice, each time checking it, its
// contents and its geometry (blockSize, 8 MiB segments) and writing to it;
// between the two it detaches and resyncs the mirror.
func testFormatFixture(t *testing.T, fixture string, blockSize int) {
	rounds := fixtureRounds()
	dir := t.TempDir()
	fixtureUntar(t, fixture, dir)
	want := map[string][]byte{}
	for _, r := range rounds {
		for k, v := range r {
			if v == nil {
				delete(want, k)
			} else {
				want[k] = v
			}
		}
	}
	path := filepath.Join(dir, "db")
	for reopen := range 2 {
		db, err := heapkv.Open(path, fixtureOptions(blockSize))
		if err != nil {
			t.Fatalf("open #%d: %v", reopen, err)
		}
		if st, err := db.Stats(); err != nil || st.BlockSize != blockSize || st.SegmentSize != 8<<20 {
			t.Errorf("open #%d: %d-byte blocks, %d-byte segments (%v); the fixture has %d and 8 MiB", reopen, st.BlockSize, st.SegmentSize, err, blockSize)
		}
		if rs := db.Replicas(); len(rs) != 2 || rs[0].State != heapkv.ReplicaInSync || rs[1].State != heapkv.ReplicaInSync {
			t.Errorf("open #%d: replicas %+v, want two in sync", reopen, rs)
		}
		rep, err := db.Check(t.Context())
		if err != nil || !rep.OK() {
			t.Fatalf("open #%d: Check: %v\n%v", reopen, err, rep)
		}
		fixtureCheckContents(t, db, want)
		// New writes: the fixture's geometry, values of every kind.
		rng := rand.New(rand.NewPCG(uint64(reopen), 9))
		for i := range 60 {
			k := fmt.Sprintf("new%d-%03d", reopen, i)
			v := bytes.Repeat([]byte{byte(rng.Uint32())}, []int{0, 50, 300, 4100, 9000}[i%5])
			if err := db.Put([]byte(k), v); err != nil {
				t.Fatal(err)
			}
			want[k] = v
		}
		for i := 1; i < fixtureKeys; i += 5 {
			k := fmt.Sprintf("fx%04d", i)
			if err := db.Delete([]byte(k)); err != nil {
				t.Fatal(err)
			}
			delete(want, k)
		}
		fixtureCheckContents(t, db, want)
		if reopen == 0 {
			// A replica resyncs in the old layout, too.
			if err := db.DetachReplica(1); err != nil {
				t.Fatal(err)
			}
			if err := db.Put([]byte("while-detached"), bytes.Repeat([]byte("d"), 5000)); err != nil {
				t.Fatal(err)
			}
			want["while-detached"] = bytes.Repeat([]byte("d"), 5000)
			if err := db.AttachReplica(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			fixtureWaitInSync(t, db)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// fixtureCheckContents reads every key of want and scans the database for keys
// it should not have.
func fixtureCheckContents(t *testing.T, db *heapkv.DB, want map[string][]byte) {
	t.Helper()
	for k, v := range want {
		got, err := db.Get([]byte(k))
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Get(%q) = %d bytes, %v; want %d bytes", k, len(got), err, len(v))
		}
	}
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if _, in := want[string(it.Key())]; !in {
			t.Fatalf("the database holds %q, which it should not", it.Key())
		}
		n++
	}
	if err := it.Error(); err != nil || n != len(want) {
		t.Fatalf("scan: %d keys, %v; want %d", n, err, len(want))
	}
}

// fixtureUntar extracts a gzipped tar of regular files and directories
// into dir.
func fixtureUntar(t *testing.T, name, dir string) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, filepath.Clean(dir)+string(filepath.Separator)) {
			t.Fatalf("fixture entry %q escapes the directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("fixture entry %q has type %c", h.Name, h.Typeflag)
		}
	}
}
