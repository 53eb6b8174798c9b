package wal_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/testfs"
	"github.com/heapkv/heapkv/wal"
)

// BenchmarkAppend appends one record per operation to a log on the real
// file system (b.TempDir), with and without a Sync after every Append.
//
//	go test ./wal -run '^$' -bench BenchmarkAppend -benchtime 2s
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{100, 4096} {
		for _, sync := range []bool{false, true} {
			b.Run(fmt.Sprintf("payload=%d/sync=%v", size, sync), func(b *testing.B) {
				benchAppend(b, size, sync)
			})
		}
	}
}

// BenchmarkSyncMark measures what the sync mark costs a synced group: one
// 4 KiB record appended and synced per operation, on the real file system
// (b.TempDir, so under $TMPDIR or /tmp), with the mark (a segment fsync
// plus the mark's pwrite and fdatasync) and without it (the segment fsync
// only).
//
//	go test ./wal -run '^$' -bench BenchmarkSyncMark -count 6
func BenchmarkSyncMark(b *testing.B) {
	for _, mark := range []bool{true, false} {
		b.Run(fmt.Sprintf("mark=%v", mark), func(b *testing.B) {
			var syncs atomic.Int64 // fsync and fdatasync calls, of any file
			fs := testfs.Wrap(vfs.Default, func(op testfs.Op) {
				if op.Kind.IsSync() {
					syncs.Add(1)
				}
			})
			opts := wal.Options{FS: fs, Dir: b.TempDir(), DBID: testDBID, Logger: quietLogger()}
			if !mark {
				opts = wal.WithoutSyncMark(opts)
			}
			benchAppendOpts(b, opts, 4096, true, &syncs)
		})
	}
}

// BenchmarkSyncedGroup measures what a synced group costs: one 4 KiB
// record appended per operation and made durable with SyncTo (the segment's
// fdatasync only; the mark lags) or with Sync (the segment's fdatasync and
// the mark's), on the real file system (b.TempDir). syncs/op counts every
// fsync and fdatasync; full-syncs/op the segment flushes that were full
// fsyncs (none: the segments are preallocated).
//
//	go test ./wal -run '^$' -bench BenchmarkSyncedGroup -count 6
func BenchmarkSyncedGroup(b *testing.B) {
	for _, how := range []string{"SyncTo", "Sync"} {
		b.Run(how, func(b *testing.B) {
			var syncs atomic.Int64
			fs := testfs.Wrap(vfs.Default, func(op testfs.Op) {
				if op.Kind.IsSync() {
					syncs.Add(1)
				}
			})
			opts := wal.Options{FS: fs, Dir: b.TempDir(), DBID: testDBID, Logger: quietLogger()}
			l, err := wal.Open(opts, 1)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			payload := [][]byte{make([]byte, 4096)}
			b.SetBytes(4096)
			syncs.Store(0)
			before := l.Stats()
			for i := 0; b.Loop(); i++ {
				lsn, err := l.Append(payload)
				if err != nil {
					b.Fatal(err)
				}
				if how == "SyncTo" {
					err = l.SyncTo(lsn)
				} else {
					err = l.Sync()
				}
				if err != nil {
					b.Fatal(err)
				}
				if i%10000 == 9999 { // bound the disk space the benchmark uses
					if err := l.RemoveThrough(lsn); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			s := l.Stats()
			b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/op")
			b.ReportMetric(float64(s.FullSyncs-before.FullSyncs)/float64(b.N), "full-syncs/op")
		})
	}
}

func benchAppend(b *testing.B, size int, sync bool) {
	opts := wal.Options{FS: vfs.Default, Dir: b.TempDir(), DBID: testDBID, Logger: quietLogger()}
	benchAppendOpts(b, opts, size, sync, nil)
}

// benchAppendOpts runs the benchmark loop; if syncs is set it counts the
// sync calls, reported (without Open's) as syncs/op.
func benchAppendOpts(b *testing.B, opts wal.Options, size int, sync bool, syncs *atomic.Int64) {
	l, err := wal.Open(opts, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if syncs != nil {
		syncs.Store(0)
	}
	payload := [][]byte{make([]byte, size)}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := l.Append(payload); err != nil {
			b.Fatal(err)
		}
		if sync {
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		if i%100000 == 99999 { // bound the disk space the benchmark uses
			if err := l.RemoveThrough(l.NextLSN() - 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	s := l.Stats()
	b.ReportMetric(float64(s.Syncs)/float64(b.N), "fsyncs/op")
	if syncs != nil {
		b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/op")
	}
}
