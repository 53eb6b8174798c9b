package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/wal"
)

// tailLog is a log directory (file name -> contents) whose newest segment
// holds synced records followed by unsynced ones, as a process crash
// leaves it.
type tailLog struct {
	files     map[string][]byte
	newest    string  // name of the newest segment
	m         model   // every record written
	synced    wal.LSN // the highest LSN whose Sync returned
	syncedEnd int     // offset in newest where record synced+1 starts
	dataEnd   int     // offset in newest where its records end (zeros follow)
}

// writeTailLog writes a first segment of 6 synced records, rotates, then
// writes groups of 1..3 records syncing after about half of them, and
// finally three unsynced groups; the Log is abandoned, not closed.
func writeTailLog(t *testing.T, seed uint64, mark bool) tailLog {
	rng := rand.New(rand.NewPCG(seed, 0x7A11))
	opts, _ := testOptions(vfs.NewMem(), 16<<10) // room for every record
	opts.Logger = quietLogger()
	if !mark {
		opts = wal.WithoutSyncMark(opts)
	}
	l, err := wal.Open(opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := model{}
	appendGroup(t, l, m, rng, 6, 100)
	if err := l.Rotate(); err != nil {
		t.Fatal(err)
	}
	newest := wal.SegmentName(l.NextLSN())
	for i := range 14 {
		appendGroup(t, l, m, rng, 1+rng.IntN(3), 120)
		if i == 13 || rng.IntN(2) == 0 {
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	synced := l.SyncedLSN()
	for range 3 {
		appendGroup(t, l, m, rng, 1+rng.IntN(2), 120)
	}
	files := snapshot(t, opts.FS, opts.Dir)
	// Walk the newest segment's records to find where synced+1 starts and
	// where the records end.
	seg := files[newest]
	salt := segmentSalt(seg)
	syncedEnd, off := 0, wal.SaltedSegmentHeaderSize
	for {
		lsn, _, _, n, err := wal.DecodeSaltedRecord(seg[off:], salt)
		if lsn > synced && syncedEnd == 0 {
			syncedEnd = off
		}
		if err != nil {
			break
		}
		off += n
	}
	return tailLog{files: files, newest: newest, m: m, synced: synced, syncedEnd: syncedEnd, dataEnd: off}
}

// segmentSalt returns the salt in the header of a salted segment.
func segmentSalt(seg []byte) uint64 { return binary.LittleEndian.Uint64(seg[48:]) }

// tailDamage is one way to damage the newest segment at an offset.
type tailDamage struct {
	name  string
	apply func(b []byte, off int) []byte
}

var tailDamages = []tailDamage{
	{"truncate", func(b []byte, off int) []byte { return b[:off] }},
	{"zero to end", func(b []byte, off int) []byte { clear(b[off:]); return b }},
	{"zero 16 bytes", func(b []byte, off int) []byte { clear(b[off:min(off+16, len(b))]); return b }},
}

// tailOutcome counts what replaying the damaged copies gave.
type tailOutcome struct {
	intact, corrupt, rolledBack int
	failures                    []string
}

// replayTailCopies damages a copy of the newest segment at every stride-th
// offset up to a little past the end of its records (the zeros after them
// are all alike) in every way and replays it. A copy passes if Replay returns ErrCorrupt, or
// returns the exact records through last >= synced. Damage that starts at
// or after syncedEnd (only unsynced records hit) must replay without error.
func replayTailCopies(t *testing.T, tl tailLog, stride int) tailOutcome {
	var out tailOutcome
	// Replay only reads: one directory serves every copy, with the newest
	// segment rewritten each time.
	fs := vfs.NewMem()
	opts, _ := testOptions(fs, 0)
	opts.Logger = quietLogger()
	if err := fs.MkdirAll(opts.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range tl.files {
		writeFile(t, fs, fs.PathJoin(opts.Dir, name), bytes.Clone(b)) // Write may scramble its input
	}
	size := min(len(tl.files[tl.newest]), tl.dataEnd+2*wal.SaltedRecordHeaderSize)
	for off := 0; off <= size; off += stride {
		for _, d := range tailDamages {
			if off == size && d.name != "truncate" {
				continue
			}
			writeFile(t, fs, fs.PathJoin(opts.Dir, tl.newest), d.apply(bytes.Clone(tl.files[tl.newest]), off))
			want := wal.LSN(1)
			last, err := wal.Replay(opts, 0, func(lsn wal.LSN, p []byte) error {
				if lsn != want || !bytes.Equal(p, tl.m[lsn]) {
					return fmt.Errorf("LSN %d (want %d): payload differs", lsn, want)
				}
				want++
				return nil
			})
			where := fmt.Sprintf("%s at %d (synced %d ends at %d)", d.name, off, tl.synced, tl.syncedEnd)
			switch {
			case errors.Is(err, wal.ErrCorrupt) && off >= tl.syncedEnd:
				out.failures = append(out.failures, fmt.Sprintf("%s: torn tail past the mark refused: %v", where, err))
			case errors.Is(err, wal.ErrCorrupt):
				out.corrupt++
			case err != nil:
				out.failures = append(out.failures, fmt.Sprintf("%s: %v", where, err))
			case last < tl.synced:
				out.rolledBack++
				out.failures = append(out.failures, fmt.Sprintf("%s: log ends at %d, below the synced %d, without an error", where, last, tl.synced))
			default:
				out.intact++
			}
		}
	}
	return out
}

// TestTailDamage (issue 11, item 5): truncating or zeroing the newest
// segment anywhere never rolls the log back below the highest LSN whose
// Sync returned without an ErrCorrupt, and damage only to records after it
// is a torn tail. Without the sync mark (a log of an older version) the
// same check finds silent rollbacks, which shows it can fail.
func TestTailDamage(t *testing.T) {
	seeds := 2
	if testing.Short() {
		seeds = 1
	}
	for seed := range uint64(seeds) {
		tl := writeTailLog(t, seed, true)
		if tl.syncedEnd == 0 || tl.syncedEnd >= tl.dataEnd || tl.synced < 10 {
			t.Fatalf("seed %d: synced %d ends at %d of %d bytes of records: no unsynced tail", seed, tl.synced, tl.syncedEnd, tl.dataEnd)
		}
		out := replayTailCopies(t, tl, 1)
		if len(out.failures) > 0 {
			t.Fatalf("seed %d: %d failures (%d silent rollbacks), e.g.\n%s", seed, len(out.failures), out.rolledBack, out.failures[0])
		}
		if out.corrupt == 0 || out.intact == 0 {
			t.Fatalf("seed %d: %d intact, %d corrupt: both outcomes expected", seed, out.intact, out.corrupt)
		}
		old := replayTailCopies(t, writeTailLog(t, seed, false), 5)
		if old.rolledBack == 0 {
			t.Fatalf("seed %d: without the sync mark no damaged copy rolled back; the check cannot fail", seed)
		}
		t.Logf("seed %d: %d bytes of records, synced through %d ending at %d; with the mark %d copies replayed intact, %d corrupt; without it %d (of the copies at every 5th offset) rolled back in silence",
			seed, tl.dataEnd, tl.synced, tl.syncedEnd, out.intact, out.corrupt, old.rolledBack)
	}
}
