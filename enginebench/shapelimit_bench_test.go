package enginebench

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/heapkv/heapkv/internal/vfsutil"
)

// BenchmarkWriteShapeLimit measures the limit of heapkv's synced write
// shape on this disk and kernel: BenchmarkFlushLimit's log (a preallocated
// file, one fdatasync a group), and beside it every value written a second
// time, into a heap file, the cheapest way the heap can be written: one
// goroutine, woken as each flush starts, writes the values that flush
// covers in one sequential pwrite at the heap's end (heapkv's heap writer
// writes them where the allocator put them, sorted and coalesced). With
// checkpoint=64MiB a checkpoint follows every 64 MiB of heap
// (DefaultCheckpointLogBytes of log, as heapkv's), writing the new part of
// the heap back 256 KiB at a time (sync_file_range on Linux, as
// mirror.WriteBack does) and flushing it with one fdatasync, while the
// writers go on; checkpoint=none never writes the heap back, which leaves
// its bytes in the page cache: a bound no store that keeps its values can
// sustain.
//
// No index, no checksums, no allocation: what is left is the device's and
// the kernel's part of a synced write that lands in a log and a heap.
// BENCHMARKS.md reports heapkv's fraction of it beside its fraction of
// BenchmarkFlushLimit.
func BenchmarkWriteShapeLimit(b *testing.B) {
	for _, size := range []int{4096, 65536} {
		for _, writers := range []int{1, 16, 64} {
			for _, ckpt := range []int64{64 << 20, 0} {
				name := "none"
				if ckpt > 0 {
					name = fmt.Sprintf("%dMiB", ckpt>>20)
				}
				b.Run(fmt.Sprintf("size=%d/writers=%d/checkpoint=%s", size, writers, name), func(b *testing.B) {
					benchFlushLimit(b, size, writers, true, &heapStream{checkpointBytes: ckpt})
				})
			}
		}
	}
}

// heapStream is BenchmarkWriteShapeLimit's heap: a writer goroutine that
// appends the values of each flush to the heap file, and a checkpointer
// that writes the heap back and flushes it every checkpointBytes.
type heapStream struct {
	checkpointBytes int64 // 0: no checkpoints

	f           vfs.File
	size, rec   int64      // a value's bytes; a log record's bytes
	flushes     chan int64 // log bytes written when a flush started; capacity 1
	due         chan int64 // heap bytes written when a checkpoint was due; capacity 1
	wg          sync.WaitGroup
	err         error // the first error of either goroutine; read after stop
	errMu       sync.Mutex
	checkpoints int // read after stop
}

// heapWriteCall bounds one pwrite of the heap writer.
const heapWriteCall = 4 << 20

func (h *heapStream) start(dir string, size int, rec int64) error {
	f, err := vfs.Default.Create(filepath.Join(dir, "heap"), vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	h.f, h.size, h.rec = f, int64(size), rec
	h.flushes = make(chan int64, 1)
	h.due = make(chan int64, 1)
	h.wg.Add(2)
	go h.writeLoop()
	go h.checkpointLoop()
	return nil
}

// kick tells the heap writer that a flush started with logBytes written.
// It never blocks: a kick the writer has not taken yet is replaced, since
// the later target covers the earlier one.
func (h *heapStream) kick(logBytes int64) {
	for {
		select {
		case h.flushes <- logBytes:
			return
		default:
		}
		select {
		case <-h.flushes:
		default:
		}
	}
}

func (h *heapStream) fail(err error) {
	h.errMu.Lock()
	defer h.errMu.Unlock()
	if h.err == nil {
		h.err = err
	}
}

// writeLoop appends, for every kick, the values of the log bytes written
// since the last one.
func (h *heapStream) writeLoop() {
	defer h.wg.Done()
	defer close(h.due)
	buf := make([]byte, heapWriteCall)
	for i := range buf {
		buf[i] = byte(i * 13)
	}
	var logDone, heapEnd, lastDue int64
	for target := range h.flushes {
		n := (target - logDone) / h.rec * h.size
		logDone = target
		for n > 0 {
			k := min(n, heapWriteCall)
			if _, err := h.f.WriteAt(buf[:k], heapEnd); err != nil {
				h.fail(fmt.Errorf("heap write: %w", err))
				return
			}
			heapEnd += k
			n -= k
		}
		if h.checkpointBytes > 0 && heapEnd-lastDue >= h.checkpointBytes {
			lastDue = heapEnd
			select {
			case h.due <- heapEnd:
			default: // the last checkpoint is still running; the next takes this
			}
		}
	}
}

// checkpointLoop writes back and flushes the heap written since its last
// pass, each time one is due.
func (h *heapStream) checkpointLoop() {
	defer h.wg.Done()
	const region = 256 << 10
	var done int64
	for end := range h.due {
		for off := done; off < end; off += region {
			if err := vfsutil.WriteBack(h.f, off, min(region, end-off)); err != nil {
				h.fail(fmt.Errorf("heap write-back: %w", err))
				return
			}
		}
		if err := h.f.SyncData(); err != nil {
			h.fail(fmt.Errorf("heap flush: %w", err))
			return
		}
		done = end
		h.checkpoints++
	}
}

// stop ends both goroutines, closes the heap file and returns the first
// error either met.
func (h *heapStream) stop() error {
	close(h.flushes)
	h.wg.Wait()
	if err := h.f.Close(); err != nil {
		h.fail(err)
	}
	return h.err
}
