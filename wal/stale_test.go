package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/wal"
)

// staleLog builds, through the API, a recycled segment whose frames of the
// file's earlier use continue the new records exactly:
//
//  1. segment 1 gets records 1..20 of recSize bytes, none synced;
//  2. recovery refuses LSN 11 (ErrStop: its data never reached the disk),
//     so the log ends at 10 and LSNs 11..20 are given out again: Open(11)
//     starts segment 11, which gets 11 and 12;
//  3. a checkpoint at 10 recycles segment 1's file as a spare, and the
//     rotation at 13 reuses it;
//  4. records 13..15 take exactly the room of the old 1..15, so the old
//     record 16 (a valid frame of the earlier use) starts where LSN 16 is
//     expected.
//
// It returns the options (with the logger's buffer) and the model of the
// records that exist: 1..10 of the first use, 11..15 of the second.
func staleLog(t *testing.T, fixedSalt bool) (wal.Options, *logBuf, model) {
	t.Helper()
	opts, logs := testOptions(vfs.NewMem(), 8<<10)
	opts.SpareSegments = 1
	opts = wal.WithInlinePrepare(opts)
	if fixedSalt {
		opts = wal.WithFixedSalt(opts, 0x5a17)
	}
	writeLog(t, opts, 1, 20, false) // abandoned: a crash
	if last, err := stopAt(opts, 11); err != nil || last != 10 {
		t.Fatalf("recovery: %d, %v; want 10, nil", last, err)
	}
	m := fixedModel(10)
	l, err := wal.Open(opts, 11)
	if err != nil {
		t.Fatal(err)
	}
	for _, lsn := range []wal.LSN{11, 12} {
		p := fmt.Appendf(nil, "second use, LSN %d", lsn)
		m[lsn] = p
		if _, err := l.Append([][]byte{p}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.SyncTo(12); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveThrough(10); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.SegmentsRecycled != 1 || s.Spares != 1 {
		t.Fatalf("segment 1 was not recycled: %+v", s)
	}
	if err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	// 13..15 fill the room of the old 1..15: 15 records of recSize bytes.
	payload := (15*recSize - 3*wal.SaltedRecordHeaderSize) / 3
	for _, lsn := range []wal.LSN{13, 14, 15} {
		p := bytes.Repeat(fmt.Appendf(nil, "%d;", lsn), payload)[:payload]
		m[lsn] = p
		if _, err := l.Append([][]byte{p}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seg := readAll(t, opts.FS, "db/wal/"+wal.SegmentName(13))
	salt, off := segmentSalt(seg), wal.SaltedSegmentHeaderSize
	for want := wal.LSN(13); want <= 15; want++ {
		lsn, _, _, n, err := wal.DecodeSaltedRecord(seg[off:], salt)
		if err != nil || lsn != want {
			t.Fatalf("recycled segment at offset %d: LSN %d, %v; want %d", off, lsn, err, want)
		}
		off += n
	}
	if off != int(recOffset(15)) || binary.LittleEndian.Uint64(seg[off+8:]) != 16 {
		t.Fatalf("LSN 15 ends at %d, followed by LSN %d; want the old 16 at %d", off, binary.LittleEndian.Uint64(seg[off+8:]), recOffset(15))
	}
	return opts, logs, m
}

// Stale frames of a recycled file's earlier use whose LSNs would continue
// the log are not records of the new segment: Replay ends the log before
// them, with no warning, since that is the normal end of the data. If
// frames had no salt (both uses with the same one) the old records 16..20
// would be replayed as part of the log.
func TestStaleFramesRejected(t *testing.T) {
	opts, logs, m := staleLog(t, false)
	if last := replayCheck(t, opts, 10, m); last != 15 {
		t.Fatalf("last %d, want 15", last)
	}
	if p, err := wal.ProvenDurable(opts); err != nil || p != 15 {
		t.Fatalf("ProvenDurable %d, %v; want 15", p, err)
	}
	if strings.Contains(logs.String(), "torn") || strings.Contains(logs.String(), "cut at LSN 13") {
		t.Fatalf("the end of the records was logged: %s", logs)
	}

	opts, _, _ = staleLog(t, true)
	var stale []wal.LSN
	last, err := wal.Replay(opts, 10, func(lsn wal.LSN, p []byte) error {
		if lsn > 15 && bytes.Equal(p, fixedPayload(lsn)) {
			stale = append(stale, lsn)
		}
		return nil
	})
	if err != nil || last != 20 || len(stale) != 5 {
		t.Fatalf("without salts: last %d, stale records %v, %v; want the old 16..20 replayed (what the salt prevents)", last, stale, err)
	}
}

// The zeros after the records of a new segment, and the stale frames after
// those of a recycled one, end the log without a warning, also after a
// crash right after a flush; a real torn tail (records after a hole) is
// still logged.
func TestCleanEndNoWarning(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts, logs := testOptions(mem, 0)
	l := writeLog(t, opts, 1, 10, false)
	if err := l.SyncTo(10); err != nil {
		t.Fatal(err)
	}
	o := opts
	o.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	if last := replayCheck(t, o, 0, fixedModel(10)); last != 10 {
		t.Fatalf("after a crash: last %d, want 10", last)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if last := replayCheck(t, opts, 0, fixedModel(10)); last != 10 {
		t.Fatalf("after Close: last %d, want 10", last)
	}
	if logs.String() != "" {
		t.Fatalf("a clean end was logged: %s", logs)
	}
	// A hole in unsynced records, with records after it: a torn tail.
	l = writeLog(t, opts, 11, 5, false)
	patchFile(t, mem, "db/wal/"+wal.SegmentName(11), recOffset(1), make([]byte, recSize))
	if last, _, err := replayErr(opts, 0); err != nil || last != 11 {
		t.Fatalf("hole at 12: %d, %v", last, err)
	}
	if !strings.Contains(logs.String(), "torn tail truncated at LSN 12") {
		t.Fatalf("the torn tail was not logged: %q", logs)
	}
	_ = l
}

// plainSegment returns a format 0 segment (as earlier versions wrote them:
// a 48-byte header and plain frames, the file ending after the last one)
// holding first..first+n-1 with fixed payloads, each carrying the synced
// LSN first-1+i/2 (a sync every second record).
func plainSegment(first wal.LSN, n int) []byte {
	b := make([]byte, wal.SegmentHeaderSize)
	filehdr.Header{Kind: filehdr.KindLog, Version: filehdr.Version, DBID: testDBID}.Encode(b)
	binary.LittleEndian.PutUint64(b[40:], uint64(first))
	binary.LittleEndian.PutUint32(b[32:], crc32.Checksum(b[36:48], crc32.MakeTable(crc32.Castagnoli)))
	for i := range n {
		lsn := first + wal.LSN(i)
		b = wal.AppendRecord(b, lsn, first-1+wal.LSN(i/2), fixedPayload(lsn))
	}
	return b
}

// Logs written before salted segments (format 0) still replay, with the
// same torn-tail and corruption rules; Open continues them in format 1
// segments, the log replays across both formats, and RemoveThrough deletes
// the old segments (they are not of the spare size).
func TestOldFormatSegments(t *testing.T) {
	newLog := func(t *testing.T) (wal.Options, *logBuf) {
		opts, logs := testOptions(vfs.NewMem(), 0)
		if err := opts.FS.MkdirAll(opts.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, opts.FS, "db/wal/"+wal.SegmentName(1), plainSegment(1, 5))
		writeFile(t, opts.FS, "db/wal/"+wal.SegmentName(6), plainSegment(6, 4))
		writeFile(t, opts.FS, markPath, wal.EncodeSyncMark(testDBID, 7))
		return opts, logs
	}
	opts, logs := newLog(t)
	if last := replayCheck(t, opts, 0, fixedModel(9)); last != 9 {
		t.Fatalf("old log: last %d, want 9", last)
	}
	if p, err := wal.ProvenDurable(opts); err != nil || p != 7 {
		t.Fatalf("ProvenDurable %d, %v; want 7 (the mark; the stamps reach 6)", p, err)
	}
	// Damage: vouched for (LSN 7: the mark) is corruption; past the mark
	// and the stamps (LSN 9, the last one), a torn tail.
	seg6 := "db/wal/" + wal.SegmentName(6)
	plainOff := func(i int) int64 { return int64(wal.SegmentHeaderSize + i*(wal.RecordHeaderSize+100)) }
	o, _ := newLog(t)
	flipByte(t, o.FS, seg6, plainOff(1)+40)
	_, _, err := replayErr(o, 0)
	wantCorrupt(t, err, seg6, fmt.Sprintf("offset %d", plainOff(1)))
	o, ologs := newLog(t)
	flipByte(t, o.FS, seg6, plainOff(3)+40)
	if last, _, err := replayErr(o, 0); err != nil || last != 8 || !strings.Contains(ologs.String(), "torn tail truncated at LSN 9") {
		t.Fatalf("torn last record: %d, %v, %q", last, err, ologs)
	}

	// Recovery continues the old log in the new format.
	l, err := wal.Open(opts, 10)
	if err != nil {
		t.Fatal(err)
	}
	m := fixedModel(9)
	for i := wal.LSN(10); i <= 14; i++ {
		m[i] = fixedPayload(i)
		if _, err := l.Append([][]byte{m[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seg10 := readAll(t, opts.FS, "db/wal/"+wal.SegmentName(10))
	if len(seg10) != testSegmentSize || binary.LittleEndian.Uint32(seg10[36:]) != 1 {
		t.Fatalf("new segment: %d bytes, format %d", len(seg10), binary.LittleEndian.Uint32(seg10[36:]))
	}
	if last := replayCheck(t, opts, 0, m); last != 14 {
		t.Fatalf("mixed log: last %d, want 14", last)
	}
	if p, err := wal.ProvenDurable(opts); err != nil || p != 14 {
		t.Fatalf("ProvenDurable %d, %v; want 14", p, err)
	}
	if strings.Contains(logs.String(), "torn") {
		t.Fatalf("warnings: %s", logs)
	}
	l, err = wal.Open(opts, 15)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveThrough(14); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Segments != 1 || s.SegmentsRecycled != 1 {
		t.Fatalf("RemoveThrough: %+v; want the format 1 segment recycled, the old ones deleted", s)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if segs, spares := countFiles(t, opts.FS, opts.Dir); segs != 1 || spares != 1 {
		t.Fatalf("%d segments and %d spares on disk", segs, spares)
	}
	// An unknown format is corruption.
	o, _ = newLog(t)
	bad := plainSegment(10, 1)
	binary.LittleEndian.PutUint32(bad[36:], 7)
	binary.LittleEndian.PutUint32(bad[32:], crc32.Checksum(bad[36:48], crc32.MakeTable(crc32.Castagnoli)))
	writeFile(t, o.FS, "db/wal/"+wal.SegmentName(10), bad)
	_, _, err = replayErr(o, 0)
	wantCorrupt(t, err, wal.SegmentName(10), "unknown segment format 7")
	if !errors.Is(err, wal.ErrCorrupt) {
		t.Fatal(err)
	}
}
