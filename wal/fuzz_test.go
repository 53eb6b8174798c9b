package wal_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/wal"
)

// segmentBytes returns the bytes of a segment holding LSNs first..first+n-1
// with fixed payloads, synced after each record if sync.
func segmentBytes(tb testing.TB, first wal.LSN, n int, sync bool) []byte {
	opts, _ := testOptions(vfs.NewMem(), 0)
	opts.Logger = quietLogger()
	l, err := wal.Open(opts, first)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		if _, err := l.Append([][]byte{fixedPayload(first + wal.LSN(i))}); err != nil {
			tb.Fatal(err)
		}
		if sync {
			if err := l.Sync(); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	f, err := opts.FS.Open("db/wal/" + wal.SegmentName(first))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzReplay replays a log whose last segment (starting at LSN 4) holds
// arbitrary bytes, after a valid segment holding LSNs 1..3 (or, if alone,
// as the only segment, starting at LSN 1). Replay must not panic, must
// report only corruption, and must return a dense prefix with the right
// payloads.
func FuzzReplay(f *testing.F) {
	good := segmentBytes(f, 4, 5, true)
	unsynced := segmentBytes(f, 4, 5, false)
	f.Add(good, false)
	f.Add(unsynced, false)
	f.Add(good[:len(good)-7], false)
	f.Add(good[:30], false)
	f.Add(append(make([]byte, wal.SegmentHeaderSize), good[wal.SegmentHeaderSize:]...), false)
	f.Add(append(make([]byte, wal.SaltedSegmentHeaderSize), good[wal.SaltedSegmentHeaderSize:]...), false)
	holed := bytes.Clone(unsynced)
	clear(holed[wal.SaltedSegmentHeaderSize : wal.SaltedSegmentHeaderSize+recSize])
	f.Add(holed, false)
	f.Add(segmentBytes(f, 1, 5, true), true)
	f.Add([]byte("not a log at all, not a log at all, not a log at all"), true)
	prefix := segmentBytes(f, 1, 3, true)
	f.Fuzz(func(t *testing.T, data []byte, alone bool) {
		fs := vfs.NewMem()
		opts, _ := testOptions(fs, 0)
		opts.Logger = quietLogger()
		if err := fs.MkdirAll(opts.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		first := wal.LSN(4)
		if alone {
			first = 1
		} else {
			writeFile(t, fs, "db/wal/"+wal.SegmentName(1), prefix)
		}
		writeFile(t, fs, "db/wal/"+wal.SegmentName(first), data)
		want := wal.LSN(1)
		last, err := wal.Replay(opts, 0, func(lsn wal.LSN, p []byte) error {
			if lsn != want {
				return fmt.Errorf("LSN %d, want %d", lsn, want)
			}
			want++
			if lsn < 4 && !bytes.Equal(p, fixedPayload(lsn)) {
				return fmt.Errorf("LSN %d: wrong payload", lsn)
			}
			return nil
		})
		if err != nil && !errors.Is(err, wal.ErrCorrupt) {
			t.Fatalf("Replay: %v", err)
		}
		if last != want-1 {
			t.Fatalf("Replay returned %d after replaying through %d", last, want-1)
		}
		if err == nil && !alone && last < 3 {
			t.Fatalf("Replay lost the valid first segment: last %d", last)
		}
	})
}
