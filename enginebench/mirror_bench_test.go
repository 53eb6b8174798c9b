package enginebench

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heapkv/heapkv"
)

// Mirrored heap replicas (issue 3): the cost of mirroring, resync speed
// against a plain file copy, and what a resync copies.
//
//	go test -run '^$' -bench 'MirrorWrite' -benchtime 4000x ./enginebench
//	go test -run '^$' -bench 'MirrorResync' -benchtime 3x ./enginebench
//
// BenchmarkMirrorWrite: 8 writers Put 16 KiB values into a database with 1,
// 2 or 3 heap replicas (the mirrors in subdirectories, so on the same disk:
// every replica costs its own pwrite and fsync on one device), synced or
// NoSync. One op is one Put.
//
// BenchmarkMirrorResync: a heap of -mirrorbench.mb MiB of 16 KiB values.
// "seqcopy" copies the heap file to a new file in 1 MiB reads and writes and
// fsyncs it: the plain sequential copy a resync is measured against.
// "full" detaches mirror 1, deletes its file and attaches it again: a full
// copy of the allocated blocks. "changed-N%" detaches mirror 1, overwrites
// N% of the keys, and attaches it: copied-MB must equal changed-MB (the
// blocks of the values written while it was away), next to full-MB (what a
// full copy moves). One op is one copy; MB/s is the copy's own rate.

var (
	flagMirrorDir = flag.String("mirrorbench.dir", "", "parent of the mirror benchmark directories (default $TMPDIR); must be on real disk")
	flagMirrorMB  = flag.Int("mirrorbench.mb", 256, "BenchmarkMirrorResync: heap size in MiB")
)

const mirrorValue = 16 << 10

func mirrorDir(b *testing.B) string {
	d, err := os.MkdirTemp(*flagMirrorDir, "mirrorbench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func mirrorOpts(replicas int, noSync bool) *heapkv.Options {
	o := &heapkv.Options{NoSync: noSync, Logger: slog.New(slog.DiscardHandler), ValueCacheSize: -1, BlockSize: HeapBlockSize}
	for i := 1; i < replicas; i++ {
		o.Mirrors = append(o.Mirrors, fmt.Sprintf("m%d", i))
	}
	return o
}

func mirrorKey(i uint64) []byte { return binary.BigEndian.AppendUint64([]byte("key-"), i) }

func mirrorVal(i, gen uint64) []byte {
	v := make([]byte, mirrorValue)
	r := rand.New(rand.NewPCG(i, gen))
	for j := 0; j < len(v); j += 8 {
		binary.LittleEndian.PutUint64(v[j:], r.Uint64())
	}
	return v
}

func BenchmarkMirrorWrite(b *testing.B) {
	for _, synced := range []bool{true, false} {
		for replicas := 1; replicas <= 3; replicas++ {
			b.Run(fmt.Sprintf("sync=%v/replicas=%d", synced, replicas), func(b *testing.B) {
				db, err := heapkv.Open(filepath.Join(mirrorDir(b), "db"), mirrorOpts(replicas, !synced))
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				vals := make([][]byte, 64)
				for i := range vals {
					vals[i] = mirrorVal(uint64(i), 0)
				}
				b.SetBytes(mirrorValue)
				b.ResetTimer()
				var next atomic.Int64
				var wg sync.WaitGroup
				for range 8 {
					wg.Go(func() {
						for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
							if err := db.Put(mirrorKey(uint64(i)), vals[i%64]); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				if err := db.Sync(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				st, _ := db.Stats()
				b.ReportMetric(float64(st.Fsyncs)/float64(b.N), "fsyncs/op")
			})
		}
	}
}

// loadMirrored makes a database with one mirror holding keys 16 KiB values.
func loadMirrored(b *testing.B, keys int) (*heapkv.DB, string) {
	dir := filepath.Join(mirrorDir(b), "db")
	db, err := heapkv.Open(dir, mirrorOpts(2, true))
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(keys); i = next.Add(1) - 1 {
				if err := db.Put(mirrorKey(uint64(i)), mirrorVal(uint64(i), 0)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := db.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	return db, dir
}

func BenchmarkMirrorResync(b *testing.B) {
	keys := *flagMirrorMB << 20 / mirrorValue
	b.Run("seqcopy", func(b *testing.B) {
		db, dir := loadMirrored(b, keys)
		defer db.Close()
		var n int64
		for b.Loop() {
			b.StopTimer()
			os.Remove(filepath.Join(dir, "copy")) // like the replica file of "full"
			b.StartTimer()
			n = seqCopy(b, filepath.Join(dir, "heap"), filepath.Join(dir, "copy"))
		}
		b.SetBytes(n)
		b.ReportMetric(float64(n)/(1<<20), "copied-MB")
	})
	b.Run("full", func(b *testing.B) {
		db, dir := loadMirrored(b, keys)
		defer db.Close()
		var copied int64
		for b.Loop() {
			b.StopTimer()
			if err := db.DetachReplica(1); err != nil {
				b.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, "m1", "heap")); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			copied = attachTimed(b, db)
		}
		st, _ := db.Stats()
		b.SetBytes(copied)
		b.ReportMetric(float64(copied)/(1<<20), "copied-MB")
		b.ReportMetric(float64(st.HeapAllocBytes)/(1<<20), "full-MB")
	})
	for _, pct := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("changed-%d%%", pct), func(b *testing.B) {
			db, _ := loadMirrored(b, keys)
			defer db.Close()
			rng := rand.New(rand.NewPCG(uint64(pct), 1))
			var copied, changed int64
			for gen := uint64(1); b.Loop(); gen++ {
				b.StopTimer()
				if err := db.DetachReplica(1); err != nil {
					b.Fatal(err)
				}
				written := map[uint64]bool{}
				for len(written) < keys*pct/100 {
					k := rng.Uint64N(uint64(keys))
					if written[k] {
						continue
					}
					written[k] = true
					if err := db.Put(mirrorKey(k), mirrorVal(k, gen)); err != nil {
						b.Fatal(err)
					}
				}
				if err := db.Sync(); err != nil { // frees of the old values become reusable
					b.Fatal(err)
				}
				changed = int64(len(written)) * mirrorValue
				b.StartTimer()
				copied = attachTimed(b, db)
			}
			st, _ := db.Stats()
			b.SetBytes(copied)
			b.ReportMetric(float64(copied)/(1<<20), "copied-MB")
			b.ReportMetric(float64(changed)/(1<<20), "changed-MB")
			b.ReportMetric(float64(st.HeapAllocBytes)/(1<<20), "full-MB")
		})
	}
}

// attachTimed attaches replica 1 and returns the bytes it copied.
func attachTimed(b *testing.B, db *heapkv.DB) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := db.AttachReplica(ctx, 1); err != nil {
		b.Fatal(err)
	}
	return db.Replicas()[1].BytesCopied
}

// seqCopy copies from to to in 1 MiB reads and writes through user space
// (the wrappers keep io.Copy from using copy_file_range, which a resync
// cannot) and fdatasyncs the copy.
func seqCopy(b *testing.B, from, to string) int64 {
	in, err := os.Open(from)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	n, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20))
	if err == nil {
		err = fdatasync(out) // what a replica's sync does
	}
	if err != nil {
		b.Fatal(err)
	}
	return n
}
