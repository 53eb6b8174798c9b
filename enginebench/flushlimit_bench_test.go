package enginebench

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// BenchmarkFlushLimit measures the physical limit of synced writes on this
// disk: the best a store can do that makes each write durable with one
// device flush per group. Writers put their bytes (value plus 32 bytes of
// framing) at the end of one file under a mutex and wait; one syncer
// flushes everything written so far with one fdatasync and releases every
// writer it covered, while the writers of the next group write. Nothing
// else happens: no index, no checksum, no allocation.
//
// file=prealloc writes into a file already written with zeros (the flush
// carries no allocation metadata: Pebble's recycled WAL, heapkv's
// preallocated log segments); file=append grows the file (each flush also
// commits the new size and blocks, as an unpreallocated log or a sparse
// heap does).
func BenchmarkFlushLimit(b *testing.B) {
	for _, size := range []int{100, 1024, 4096, 4100, 65536} {
		for _, writers := range []int{1, 16, 64} {
			for _, file := range []string{"prealloc", "append"} {
				b.Run(fmt.Sprintf("size=%d/writers=%d/file=%s", size, writers, file), func(b *testing.B) {
					benchFlushLimit(b, size, writers, file == "prealloc", nil)
				})
			}
		}
	}
}

// benchFlushLimit runs the writers and the syncer of BenchmarkFlushLimit;
// with heap, each flush also hands the values it covers to heap's writer
// (BenchmarkWriteShapeLimit).
func benchFlushLimit(b *testing.B, size, writers int, prealloc bool, heap *heapStream) {
	dir, err := TempDir(*flagDir, "flushlimit")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	f, err := vfs.Default.Create(filepath.Join(dir, "log"), vfs.WriteCategoryUnspecified)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := int64(size + 32)
	if prealloc {
		zeros := make([]byte, 1<<20)
		for off := int64(0); off < int64(b.N)*rec; off += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		written int64 // bytes written
		flushed int64 // bytes flushed
		flushes int64
		failed  error
		done    bool
	)
	go func() { // the syncer
		mu.Lock()
		defer mu.Unlock()
		for !done {
			if written == flushed {
				cond.Wait()
				continue
			}
			target := written
			if heap != nil {
				heap.kick(target)
			}
			mu.Unlock()
			err := f.SyncData() // fdatasync
			mu.Lock()
			flushed, flushes = target, flushes+1
			if err != nil && failed == nil {
				failed = err
			}
			cond.Broadcast()
		}
	}()
	buf := make([]byte, rec)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	if heap != nil {
		if err := heap.start(dir, size, rec); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	err = runParallel(b.N, writers, func(uint64, []byte) error {
		mu.Lock()
		off := written
		written += rec
		// The write happens under the mutex, so a flush never starts
		// between reserving the bytes and writing them.
		_, err := f.WriteAt(buf, off)
		cond.Broadcast()
		for err == nil && flushed < off+rec && failed == nil {
			cond.Wait()
		}
		if err == nil {
			err = failed
		}
		mu.Unlock()
		return err
	})
	elapsed := time.Since(start)
	b.StopTimer()
	mu.Lock()
	done = true
	cond.Broadcast()
	n := flushes
	mu.Unlock()
	if heap != nil {
		if herr := heap.stop(); err == nil {
			err = herr
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(b.N)/float64(n), "ops/flush")
	b.ReportMetric(float64(elapsed.Microseconds())/float64(n), "µs/flush")
	if heap != nil {
		b.ReportMetric(float64(heap.checkpoints), "checkpoints")
	}
}
