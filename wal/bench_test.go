package wal_test

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
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

func benchAppend(b *testing.B, size int, sync bool) {
	opts := wal.Options{FS: vfs.Default, Dir: b.TempDir(), DBID: testDBID, Logger: quietLogger()}
	l, err := wal.Open(opts, 1)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
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
}
