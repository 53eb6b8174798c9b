package wal_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/filehdr"
	"github.com/heapkv/heapkv/wal"
)

const markPath = "db/wal/" + wal.SyncMarkName

// markFile returns a sync mark file whose slot 0 holds (seq0, lsn0) and
// slot 1 (seq1, lsn1).
func markFile(seq0 uint64, lsn0 wal.LSN, seq1 uint64, lsn1 wal.LSN) []byte {
	b := wal.EncodeSyncMark(testDBID, 0)
	wal.EncodeMarkSlot(b[wal.MarkOffSlot0:], seq0, lsn0)
	wal.EncodeMarkSlot(b[wal.MarkOffSlot1:], seq1, lsn1)
	return b
}

func TestSyncMarkDecode(t *testing.T) {
	other := testDBID
	other[15]++
	zeroSlot := func(b []byte, off int) []byte {
		clear(b[off : off+wal.MarkSlotSize])
		return b
	}
	flip := func(b []byte, off int) []byte {
		b[off] ^= 0x10
		return b
	}
	for _, c := range []struct {
		name    string
		b       []byte
		id      filehdr.DBID
		seq     uint64
		lsn     wal.LSN
		corrupt string // what the error must mention; "" if none
	}{
		{"new file", wal.EncodeSyncMark(testDBID, 7), testDBID, 1, 7, ""},
		{"slot 0 newer", markFile(4, 20, 3, 15), testDBID, 4, 20, ""},
		{"slot 1 newer", markFile(4, 20, 5, 26), testDBID, 5, 26, ""},
		{"newer slot torn (zeros)", zeroSlot(markFile(4, 20, 5, 26), wal.MarkOffSlot1), testDBID, 4, 20, ""},
		{"newer slot torn (bit flip in LSN)", flip(markFile(4, 20, 5, 26), wal.MarkOffSlot1+16), testDBID, 4, 20, ""},
		{"older slot torn", flip(markFile(6, 30, 5, 26), wal.MarkOffSlot1+3), testDBID, 6, 30, ""},
		{"padding is not checked", flip(markFile(6, 30, 5, 26), 5000), testDBID, 6, 30, ""},
		{"zero ID accepts any database", markFile(6, 30, 5, 26), filehdr.DBID{}, 6, 30, ""},
		{"both slots bad", flip(zeroSlot(markFile(6, 30, 5, 26), wal.MarkOffSlot0), wal.MarkOffSlot1+9), testDBID, 0, 0, "both slots"},
		{"both slots zero", zeroSlot(zeroSlot(markFile(6, 30, 5, 26), wal.MarkOffSlot0), wal.MarkOffSlot1), testDBID, 0, 0, "both slots"},
		{"wrong parity in both", markFile(5, 30, 6, 31), testDBID, 0, 0, "both slots"},
		{"wrong parity in one", markFile(5, 30, 7, 31), testDBID, 7, 31, ""},
		{"newer slot records less", markFile(6, 30, 7, 29), testDBID, 0, 0, "below LSN 30"},
		{"wrong database", markFile(6, 30, 5, 26), other, 0, 0, "database"},
		{"damaged header", flip(markFile(6, 30, 5, 26), 14), testDBID, 0, 0, "header"},
		{"short", markFile(6, 30, 5, 26)[:wal.MarkOffSlot1+wal.MarkSlotSize], testDBID, 0, 0, "bytes"},
		{"long", append(markFile(6, 30, 5, 26), 0), testDBID, 0, 0, "bytes"},
		{"empty", nil, testDBID, 0, 0, "bytes"},
		{"a log segment", segmentBytes(t, 1, 200, false)[:wal.MarkFileSize], testDBID, 0, 0, "SM"},
	} {
		t.Run(c.name, func(t *testing.T) {
			seq, lsn, err := wal.DecodeSyncMark(c.b, c.id, markPath)
			if c.corrupt != "" {
				wantCorrupt(t, err, markPath, c.corrupt)
				return
			}
			if err != nil || seq != c.seq || lsn != c.lsn {
				t.Fatalf("got seq %d, LSN %d, %v; want %d, %d", seq, lsn, err, c.seq, c.lsn)
			}
		})
	}
}

// The file Open makes is the encoded new file; each Sync that advances
// SyncedLSN writes the next sequence number into the other slot, and
// nothing else of the file changes.
func TestSyncMarkFile(t *testing.T) {
	opts, _ := testOptions(vfs.NewMem(), 0)
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, opts.FS, opts.Dir)[wal.SyncMarkName]; !bytes.Equal(got, wal.EncodeSyncMark(testDBID, 0)) {
		t.Fatalf("Open(1) wrote a sync mark file of %d bytes that is not the encoded new file", len(got))
	}
	prev := wal.EncodeSyncMark(testDBID, 0)
	for i := 1; i <= 5; i++ {
		if _, err := l.Append([][]byte{fixedPayload(wal.LSN(i))}); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil { // nothing new: no update
			t.Fatal(err)
		}
		b := snapshot(t, opts.FS, opts.Dir)[wal.SyncMarkName]
		seq, lsn, err := wal.DecodeSyncMark(b, testDBID, markPath)
		if err != nil || seq != uint64(i+1) || lsn != wal.LSN(i) {
			t.Fatalf("after Sync %d: seq %d, LSN %d, %v; want %d, %d", i, seq, lsn, err, i+1, i)
		}
		off := wal.MarkOffSlot0
		if seq%2 == 1 {
			off = wal.MarkOffSlot1
		}
		want := bytes.Clone(prev)
		wal.EncodeMarkSlot(want[off:], seq, lsn)
		if !bytes.Equal(b, want) {
			t.Fatalf("after Sync %d: the file changed outside slot %d", i, seq%2)
		}
		prev = b
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Open at the end of the log records next-1, which it is already.
	l, err = wal.Open(opts, 6)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if b := snapshot(t, opts.FS, opts.Dir)[wal.SyncMarkName]; !bytes.Equal(b, prev) {
		t.Fatal("Open and Close with nothing new rewrote the sync mark")
	}
}

// FuzzSyncMarkDecode feeds arbitrary bytes to the sync mark decoder, whole
// or spliced into a valid file's slots. It must not panic; it fails only
// with ErrCorrupt naming the file, and what it accepts is one of the two
// slots, with the higher sequence number of the valid ones.
func FuzzSyncMarkDecode(f *testing.F) {
	f.Add(wal.EncodeSyncMark(testDBID, 9), []byte{}, []byte{})
	f.Add(markFile(10, 50, 9, 40), []byte{}, []byte{})
	f.Add([]byte{}, make([]byte, wal.MarkSlotSize), []byte{})
	f.Add([]byte("HEAPKV"), []byte{1, 2, 3}, markFile(10, 50, 9, 40)[wal.MarkOffSlot1:])
	f.Fuzz(func(t *testing.T, data, slot0, slot1 []byte) {
		if len(data) != wal.MarkFileSize {
			// Also try the bytes as the slots of a valid file.
			if _, _, err := wal.DecodeSyncMark(data, testDBID, markPath); err == nil || !errors.Is(err, wal.ErrCorrupt) {
				t.Fatalf("%d bytes decoded: %v", len(data), err)
			}
			data = wal.EncodeSyncMark(testDBID, 0)
			copy(data[wal.MarkOffSlot0:wal.MarkOffSlot0+wal.MarkSlotSize], slot0)
			copy(data[wal.MarkOffSlot1:wal.MarkOffSlot1+wal.MarkSlotSize], slot1)
		}
		seq, lsn, err := wal.DecodeSyncMark(data, testDBID, markPath)
		if err != nil {
			if !errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), markPath) {
				t.Fatalf("error %v does not wrap ErrCorrupt naming the file", err)
			}
			return
		}
		// The accepted slot re-encodes to exactly its bytes in the file.
		off := wal.MarkOffSlot0
		if seq%2 == 1 {
			off = wal.MarkOffSlot1
		}
		want := make([]byte, wal.MarkSlotSize)
		wal.EncodeMarkSlot(want, seq, lsn)
		if !bytes.Equal(data[off:off+wal.MarkSlotSize], want) {
			t.Fatalf("decoded seq %d, LSN %d, which slot %d does not hold", seq, lsn, seq%2)
		}
		// The other slot, if it is valid, is older and records no more.
		other := data[wal.MarkOffSlot0+wal.MarkOffSlot1-off:][:wal.MarkSlotSize]
		alt := wal.EncodeSyncMark(testDBID, 0)
		copy(alt[off:], make([]byte, wal.MarkSlotSize)) // only the other slot left
		copy(alt[wal.MarkOffSlot0+wal.MarkOffSlot1-off:], other)
		if oseq, olsn, err := wal.DecodeSyncMark(alt, testDBID, markPath); err == nil && (oseq > seq || olsn > lsn) {
			t.Fatalf("decoded seq %d (LSN %d), but the other slot holds a valid seq %d (LSN %d)", seq, lsn, oseq, olsn)
		}
	})
}
