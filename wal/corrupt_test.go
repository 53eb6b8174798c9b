package wal_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/base"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/wal"
)

const recSize = wal.SaltedRecordHeaderSize + 100 // every record in these tests

// fixedPayload is the 100-byte payload of lsn.
func fixedPayload(lsn wal.LSN) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "%09d;", lsn), 10)
}

// recOffset is the file offset of the i-th record (0-based) of a segment.
func recOffset(i int) int64 { return int64(wal.SaltedSegmentHeaderSize + i*recSize) }

// writeLog opens a log at first, appends n records one by one (syncing
// after each if sync), and returns it open (the caller may Close or
// abandon it).
func writeLog(t *testing.T, opts wal.Options, first wal.LSN, n int, sync bool) *wal.Log {
	t.Helper()
	l, err := wal.Open(opts, first)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := l.Append([][]byte{fixedPayload(first + wal.LSN(i))}); err != nil {
			t.Fatal(err)
		}
		if sync {
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l
}

func fixedModel(n int) model {
	m := model{}
	for i := 1; i <= n; i++ {
		m[wal.LSN(i)] = fixedPayload(wal.LSN(i))
	}
	return m
}

func flipByte(t *testing.T, fs vfs.FS, path string, off int64) {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	_, err = f.ReadAt(b[:], off)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	patchFile(t, fs, path, off, []byte{b[0] ^ 0x20})
}

// replayErr replays the whole log and returns last, the LSNs seen and err.
func replayErr(opts wal.Options, after wal.LSN) (wal.LSN, []wal.LSN, error) {
	var seen []wal.LSN
	last, err := wal.Replay(opts, after, func(lsn wal.LSN, p []byte) error {
		if !bytes.Equal(p, fixedPayload(lsn)) {
			return fmt.Errorf("LSN %d: wrong payload", lsn)
		}
		seen = append(seen, lsn)
		return nil
	})
	return last, seen, err
}

func wantCorrupt(t *testing.T, err error, mentions ...string) {
	t.Helper()
	if !errors.Is(err, wal.ErrCorrupt) || !errors.Is(err, base.ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt (and base.ErrCorrupt)", err)
	}
	for _, s := range mentions {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not mention %q", err, s)
		}
	}
}

// The log's corruption sentinel keeps its text and is the shared marker; a
// bad record, which may be a harmless torn tail, is not marked.
func TestCorruptSentinels(t *testing.T) {
	if got := wal.ErrCorrupt.Error(); got != "wal: corrupt log" {
		t.Fatalf("ErrCorrupt text %q", got)
	}
	if !errors.Is(wal.ErrCorrupt, base.ErrCorrupt) {
		t.Fatal("wal.ErrCorrupt is not base.ErrCorrupt")
	}
	_, _, _, _, err := wal.DecodeRecord(make([]byte, 10))
	if !errors.Is(err, wal.ErrBadRecord) || base.IsCorrupt(err) {
		t.Fatalf("a torn record: %v, want ErrBadRecord and not corruption", err)
	}
}

// A damaged synced record is corruption: a later record written after it
// was synced, or the sync mark, vouches for it. The same damage in a newest
// record that was never synced is a torn tail.
func TestCorruptSyncedRecord(t *testing.T) {
	seg1 := "db/wal/" + wal.SegmentName(1)
	for _, c := range []struct {
		name     string
		off      int64
		last     wal.LSN
		broken   bool
		unsynced bool // LSN 10 was never synced; the Log is abandoned
	}{
		{"payload of LSN 5", recOffset(4) + 60, 4, true, false},
		{"crc of LSN 5", recOffset(4), 4, true, false},
		{"length of LSN 5", recOffset(4) + 5, 4, true, false},
		{"lsn of LSN 5", recOffset(4) + 8, 4, true, false},
		{"synced of LSN 5", recOffset(4) + 16, 4, true, false},
		{"first record", recOffset(0) + 40, 0, true, false},
		{"LSN 5 replaced by a copy of LSN 4", -1, 4, true, false},
		{"newest record (sync mark)", recOffset(9) + 40, 9, true, false},
		{"newest record, unsynced", recOffset(9) + 40, 9, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts, logs := testOptions(vfs.NewMem(), 0)
			if !c.unsynced {
				if err := writeLog(t, opts, 1, 10, true).Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				l := writeLog(t, opts, 1, 9, true)
				if _, err := l.Append([][]byte{fixedPayload(10)}); err != nil {
					t.Fatal(err)
				}
			}
			if c.off >= 0 {
				flipByte(t, opts.FS, seg1, c.off)
			} else { // a valid record, but with the wrong LSN
				f, _ := opts.FS.Open(seg1)
				b, _ := io.ReadAll(f)
				f.Close()
				patchFile(t, opts.FS, seg1, recOffset(4), b[recOffset(3):recOffset(4)])
			}
			last, seen, err := replayErr(opts, 0)
			if c.broken {
				wantCorrupt(t, err, seg1, fmt.Sprintf("offset %d", recOffset(int(c.last))))
				if c.last == 9 && !strings.Contains(err.Error(), "sync mark") {
					t.Fatalf("error %q does not mention the sync mark", err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if !strings.Contains(logs.String(), "torn tail truncated at LSN 10") {
				t.Fatalf("no torn-tail warning in %q", logs)
			}
			if last != c.last || len(seen) != int(c.last) {
				t.Fatalf("last %d after %d records, want %d", last, len(seen), c.last)
			}
		})
	}
}

// Unsynced records after a hole are a torn tail; recovery cuts the log
// there, and the cut stays acceptable once a new segment starts at it.
func TestTornTailHoleThenValidRecords(t *testing.T) {
	opts, logs := testOptions(vfs.NewMem(), 0)
	l := writeLog(t, opts, 1, 5, true)
	for i := 6; i <= 10; i++ {
		if _, err := l.Append([][]byte{fixedPayload(wal.LSN(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Crash (abandon l) with a hole where LSN 6 was; 7..10 survive.
	seg1 := "db/wal/" + wal.SegmentName(1)
	patchFile(t, opts.FS, seg1, recOffset(5), make([]byte, recSize))
	last, _, err := replayErr(opts, 0)
	if err != nil || last != 5 {
		t.Fatalf("Replay: last %d, %v; want 5, nil", last, err)
	}
	if !strings.Contains(logs.String(), "torn tail truncated at LSN 6 in file "+seg1) {
		t.Fatalf("no warning naming LSN 6 and the file: %q", logs)
	}
	l2 := writeLog(t, opts, 6, 3, true)
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	if last := replayCheck(t, opts, 0, fixedModel(8)); last != 8 {
		t.Fatalf("after recovery: last %d, want 8", last)
	}
	// Damage in the old segment before the cut is still corruption.
	flipByte(t, opts.FS, seg1, recOffset(2)+50)
	_, _, err = replayErr(opts, 0)
	wantCorrupt(t, err, seg1)
}

func TestCorruptNonLastSegment(t *testing.T) {
	// 4 records per segment: a fifth does not fit.
	opts, _ := testOptions(vfs.NewMem(), wal.SaltedSegmentHeaderSize+4*recSize)
	if err := writeLog(t, opts, 1, 20, false).Close(); err != nil {
		t.Fatal(err)
	}
	segs := segmentNames(t, opts.FS, opts.Dir)
	if len(segs) != 5 || segs[1] != wal.SegmentName(5) {
		t.Fatalf("segments %v, want 5 of 4 records", segs)
	}
	for _, i := range []int{1, 3} { // middle and last record of segment 2
		t.Run(fmt.Sprintf("record %d", i), func(t *testing.T) {
			fs := vfs.NewMem()
			o := opts
			o.FS = fs
			if err := writeLog(t, o, 1, 20, false).Close(); err != nil {
				t.Fatal(err)
			}
			path := "db/wal/" + segs[1]
			flipByte(t, fs, path, recOffset(i)+40)
			last, _, err := replayErr(o, 0)
			wantCorrupt(t, err, path, fmt.Sprintf("offset %d", recOffset(i)))
			if last != wal.LSN(4+i) {
				t.Fatalf("last %d, want %d", last, 4+i)
			}
		})
	}
}

func TestWrongDBID(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	if err := writeLog(t, opts, 1, 3, false).Close(); err != nil {
		t.Fatal(err)
	}
	other := opts
	other.DBID[0]++
	_, _, err := replayErr(other, 0)
	wantCorrupt(t, err, wal.SyncMarkName, "database") // read first
	// Without a sync mark, the segment header is checked.
	if err := opts.FS.Remove("db/wal/" + wal.SyncMarkName); err != nil {
		t.Fatal(err)
	}
	_, _, err = replayErr(other, 0)
	wantCorrupt(t, err, wal.SegmentName(1), "database")
	// The zero DBID accepts any database.
	anyDB := opts
	anyDB.DBID = filehdr.DBID{}
	if last, _, err := replayErr(anyDB, 0); err != nil || last != 3 {
		t.Fatalf("zero DBID: %d, %v", last, err)
	}
}

func TestForeignFile(t *testing.T) {
	heapHdr := filehdr.Header{Kind: filehdr.KindHeap, Version: filehdr.Version, DBID: testDBID}.Encode(make([]byte, filehdr.Size))
	for name, content := range map[string][]byte{
		"text":        []byte(strings.Repeat("this is not a heapkv log segment. ", 4)),
		"short text":  []byte("hello"),
		"heap file":   append(heapHdr, make([]byte, 64)...),
		"bad version": nil, // filled below
	} {
		t.Run(name, func(t *testing.T) {
			opts, _ := testOptions(vfs.NewMem(), 0)
			if err := writeLog(t, opts, 1, 3, false).Close(); err != nil {
				t.Fatal(err)
			}
			path := "db/wal/" + wal.SegmentName(4)
			if content == nil {
				content = make([]byte, wal.SaltedSegmentHeaderSize+10)
				filehdr.Header{Kind: filehdr.KindLog, Version: filehdr.Version + 1, DBID: testDBID}.Encode(content)
			}
			writeFile(t, opts.FS, path, content)
			_, _, err := replayErr(opts, 0)
			wantCorrupt(t, err, path)
		})
	}
	t.Run("ignored names", func(t *testing.T) {
		opts, _ := testOptions(vfs.NewMem(), 0)
		if err := writeLog(t, opts, 1, 3, false).Close(); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"README", "1.log", "0000000000000000000x.log", "00000000000000000004.log.tmp"} {
			writeFile(t, opts.FS, "db/wal/"+n, []byte("junk"))
		}
		if last, _, err := replayErr(opts, 0); err != nil || last != 3 {
			t.Fatalf("%d, %v", last, err)
		}
		writeFile(t, opts.FS, "db/wal/"+wal.SegmentName(0), []byte("junk"))
		_, _, err := replayErr(opts, 0)
		wantCorrupt(t, err, wal.SegmentName(0))
	})
}

// copySegment writes a valid segment holding LSNs first..first+n-1 (made
// in a scratch directory) into opts.Dir.
func copySegment(t *testing.T, opts wal.Options, first wal.LSN, n int) string {
	t.Helper()
	scratch := opts
	scratch.Dir = "scratch"
	if err := writeLog(t, scratch, first, n, false).Close(); err != nil {
		t.Fatal(err)
	}
	dst := opts.FS.PathJoin(opts.Dir, wal.SegmentName(first))
	if err := vfs.Copy(opts.FS, "scratch/"+wal.SegmentName(first), dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestSegmentGapAndOverlap(t *testing.T) {
	for _, c := range []struct {
		name  string
		first wal.LSN
		what  string
	}{
		{"gap", 15, "missing"},
		// An overlap is a cut (see TestReplayErrStop) unless records after
		// the cut point were vouched for as durable.
		{"overlap", 8, "durable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts, _ := testOptions(vfs.NewMem(), 0)
			if err := writeLog(t, opts, 1, 10, true).Close(); err != nil {
				t.Fatal(err)
			}
			path := copySegment(t, opts, c.first, 3)
			last, _, err := replayErr(opts, 0)
			if c.name == "overlap" {
				path = "db/wal/" + wal.SegmentName(1)
			}
			wantCorrupt(t, err, path, c.what)
			if want := min(10, c.first-1); last != want {
				t.Fatalf("last %d, want %d", last, want)
			}
		})
	}
	t.Run("missing middle segment", func(t *testing.T) {
		opts, _ := testOptions(vfs.NewMem(), wal.SaltedSegmentHeaderSize+4*recSize)
		if err := writeLog(t, opts, 1, 12, false).Close(); err != nil {
			t.Fatal(err)
		}
		if err := opts.FS.Remove("db/wal/" + wal.SegmentName(5)); err != nil {
			t.Fatal(err)
		}
		_, _, err := replayErr(opts, 0)
		wantCorrupt(t, err, wal.SegmentName(9), "missing")
		// Replaying from after the hole is fine.
		if last, _, err := replayErr(opts, 8); err != nil || last != 12 {
			t.Fatalf("Replay(8): %d, %v", last, err)
		}
	})
}

func TestTornSegmentHeader(t *testing.T) {
	newLog := func(t *testing.T) (wal.Options, string) {
		opts, _ := testOptions(vfs.NewMem(), 0)
		if err := writeLog(t, opts, 1, 10, true).Close(); err != nil {
			t.Fatal(err)
		}
		return opts, copySegment(t, opts, 11, 5)
	}
	truncate := func(t *testing.T, fs vfs.FS, path string, n int) {
		f, _ := fs.Open(path)
		b, _ := io.ReadAll(f)
		f.Close()
		writeFile(t, fs, path, b[:n])
	}
	t.Run("short last", func(t *testing.T) {
		opts, path := newLog(t)
		truncate(t, opts.FS, path, 20)
		if last, _, err := replayErr(opts, 0); err != nil || last != 10 {
			t.Fatalf("%d, %v; want 10, nil", last, err)
		}
	})
	t.Run("zero header, records not vouched for", func(t *testing.T) {
		opts, path := newLog(t) // scratch log never synced: synced LSNs are 10
		patchFile(t, opts.FS, path, 0, make([]byte, wal.SegmentHeaderSize))
		if last, _, err := replayErr(opts, 0); err != nil || last != 10 {
			t.Fatalf("%d, %v; want 10, nil", last, err)
		}
	})
	t.Run("zero header, records vouched for", func(t *testing.T) {
		opts, _ := testOptions(vfs.NewMem(), 0)
		l := writeLog(t, opts, 1, 10, true)
		if err := l.Rotate(); err != nil {
			t.Fatal(err)
		}
		for i := 11; i <= 15; i++ {
			l.Append([][]byte{fixedPayload(wal.LSN(i))})
			l.Sync()
		}
		path := "db/wal/" + wal.SegmentName(11)
		patchFile(t, opts.FS, path, 0, make([]byte, wal.SegmentHeaderSize))
		_, _, err := replayErr(opts, 0)
		wantCorrupt(t, err, path)
	})
	t.Run("short non-last", func(t *testing.T) {
		opts, _ := newLog(t)
		copySegment(t, opts, 16, 2)
		truncate(t, opts.FS, "db/wal/"+wal.SegmentName(11), 30)
		_, _, err := replayErr(opts, 0)
		wantCorrupt(t, err, wal.SegmentName(11), "torn header")
	})
	t.Run("first LSN differs from name", func(t *testing.T) {
		opts, _ := newLog(t)
		if err := opts.FS.Rename("db/wal/"+wal.SegmentName(11), "db/wal/"+wal.SegmentName(12)); err != nil {
			t.Fatal(err)
		}
		// Replay from 11 so the renamed segment is the first one read.
		_, _, err := replayErr(opts, 11)
		wantCorrupt(t, err, wal.SegmentName(12), "header says first LSN 11")
	})
}
