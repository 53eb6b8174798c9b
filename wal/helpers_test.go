package wal_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/wal"
)

var testDBID = filehdr.DBID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

// logBuf collects log output so tests can look for warnings.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testSegmentSize is the segment size of tests that do not care: small,
// since every segment file is preallocated at its full size.
const testSegmentSize = 64 << 10

// testOptions returns options for a log in db/wal on fs with segments of
// segSize bytes (testSegmentSize if 0), and the buffer its logger writes.
func testOptions(fs vfs.FS, segSize int64) (wal.Options, *logBuf) {
	if segSize == 0 {
		segSize = testSegmentSize
	}
	lb := &logBuf{}
	return wal.Options{
		FS:          fs,
		Dir:         "db/wal",
		DBID:        testDBID,
		SegmentSize: segSize,
		Logger:      slog.New(slog.NewTextHandler(lb, nil)),
	}, lb
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// model remembers every payload appended, by LSN.
type model map[wal.LSN][]byte

// randPayload returns a payload whose first bytes name its LSN, so a record
// replayed under the wrong LSN cannot match.
func randPayload(rng *rand.Rand, lsn wal.LSN, maxLen int) []byte {
	p := fmt.Appendf(nil, "lsn=%d;", lsn)
	n := rng.IntN(maxLen + 1)
	for range n {
		p = append(p, byte(rng.Uint32()))
	}
	return p
}

// appendGroup appends n random payloads and records them in m.
func appendGroup(t testing.TB, l *wal.Log, m model, rng *rand.Rand, n, maxLen int) wal.LSN {
	t.Helper()
	next := l.NextLSN()
	ps := make([][]byte, n)
	for i := range ps {
		ps[i] = randPayload(rng, next+wal.LSN(i), maxLen)
	}
	first, err := l.Append(ps)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if first != next {
		t.Fatalf("Append returned first LSN %d, want %d", first, next)
	}
	for i, p := range ps {
		m[first+wal.LSN(i)] = p
	}
	return first
}

// replayCheck replays after `after`, checks that the records come out as a
// dense run after+1..last with exactly the payloads in m, and returns last.
func replayCheck(t testing.TB, opts wal.Options, after wal.LSN, m model) wal.LSN {
	t.Helper()
	want := after + 1
	last, err := wal.Replay(opts, after, func(lsn wal.LSN, p []byte) error {
		if lsn != want {
			return fmt.Errorf("replayed LSN %d, want %d", lsn, want)
		}
		want++
		if exp, ok := m[lsn]; !ok || !bytes.Equal(exp, p) {
			return fmt.Errorf("LSN %d: payload differs (known %v)", lsn, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(after %d): %v", after, err)
	}
	if last != want-1 && !(want == after+1 && last == after) {
		t.Fatalf("Replay returned last %d, but replayed through %d", last, want-1)
	}
	return last
}

// snapshot returns the names and contents of every file under dir.
func snapshot(t testing.TB, fs vfs.FS, dir string) map[string][]byte {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		f, err := fs.Open(fs.PathJoin(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	return out
}

// segmentNames lists the segment files in dir, oldest first.
func segmentNames(t testing.TB, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, n := range names {
		if len(n) == 24 {
			segs = append(segs, n)
		}
	}
	slices.Sort(segs)
	return segs
}

// patchFile overwrites bytes of a file in place (ignoring crash semantics).
func patchFile(t testing.TB, fs vfs.FS, path string, off int64, b []byte) {
	t.Helper()
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// writeFile creates a file with the given contents and syncs it.
func writeFile(t testing.TB, fs vfs.FS, path string, b []byte) {
	t.Helper()
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
