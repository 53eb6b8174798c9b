package heapkv

import (
	"context"
	"fmt"
	"math/bits"
	"strings"

	"github.com/heapkv/heapkv/alloc"
	"github.com/heapkv/heapkv/internal/bitmap"
)

// CheckReport is what Check found.
type CheckReport struct {
	Keys              int64    `json:"keys"` // keys in the index
	InlineValues      int64    `json:"inline_values"`
	HeapValues        int64    `json:"heap_values"`
	ValuesVerified    int64    `json:"values_verified"`     // heap values read back with a matching checksum
	ReferencedBlocks  int64    `json:"referenced_blocks"`   // heap blocks referenced by index entries
	AllocatedBlocks   int64    `json:"allocated_blocks"`    // heap blocks the allocator holds as in use
	PendingFreeBlocks int64    `json:"pending_free_blocks"` // freed blocks waiting for reuse (not leaks)
	LeakedBlocks      int64    `json:"leaked_blocks"`       // allocated, not referenced, not pending: should be 0
	DanglingBlocks    int64    `json:"dangling_blocks"`     // referenced but not allocated: should be 0
	DoubleRefBlocks   int64    `json:"double_ref_blocks"`   // referenced by two entries: should be 0
	Problems          []string `json:"problems"`
}

// maxProblems bounds how many problem lines a report keeps.
const maxProblems = 100

// OK reports whether the check found nothing wrong.
func (r *CheckReport) OK() bool { return len(r.Problems) == 0 }

func (r *CheckReport) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	} else if len(r.Problems) == maxProblems {
		r.Problems = append(r.Problems, "... more problems omitted")
	}
}

// String summarises the report.
func (r *CheckReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keys %d (inline %d, heap %d, verified %d)\n", r.Keys, r.InlineValues, r.HeapValues, r.ValuesVerified)
	fmt.Fprintf(&b, "blocks referenced %d, allocated %d, pending free %d\n", r.ReferencedBlocks, r.AllocatedBlocks, r.PendingFreeBlocks)
	fmt.Fprintf(&b, "leaked %d, dangling %d, double-referenced %d\n", r.LeakedBlocks, r.DanglingBlocks, r.DoubleRefBlocks)
	if r.OK() {
		b.WriteString("OK")
	} else {
		fmt.Fprintf(&b, "%d problems:\n  %s", len(r.Problems), strings.Join(r.Problems, "\n  "))
	}
	return b.String()
}

// Check walks the whole index and proves the allocation invariant (DESIGN
// invariant 7): every block a value references is allocated, no block is
// referenced twice, and every allocated block is referenced or waiting in
// the deferred-free queue. It reads every heap value and verifies its
// checksum, and compares the key and byte counters with what it counted.
// Writers may run meanwhile; the check sees one consistent moment. It
// returns the report, and an error wrapping ErrCorrupt if it found a
// problem; ctx cancels it.
func (db *DB) Check(ctx context.Context) (*CheckReport, error) {
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.leave()

	// Capture one moment: index snapshot, allocation bitmaps without
	// in-flight claims, deferred frees, counters; and pin it so that no
	// block it references is reused while the check reads it.
	db.applier.mu.Lock()
	snap := db.index.NewSnapshot()
	asnap := db.alloc.Snapshot()
	var pending []alloc.Extent
	db.applier.frees.pending(func(e alloc.Extent) { pending = append(pending, e) })
	want := db.applier.counters
	tok := db.pins.pin(db.applied.Load())
	db.applier.mu.Unlock()
	defer db.pins.unpin(tok)
	defer snap.Close()

	rep := &CheckReport{}
	segBlocks := uint64(db.geom.SegmentBlocks)
	total := uint64(asnap.Segments()) * segBlocks
	referenced := bitmap.New(int(total))
	allocated := bitmap.New(int(total)) // allocated and not waiting in the free queue
	asnap.ForEachAllocated(func(e alloc.Extent) bool {
		allocated.SetRange(int(e.Start), int(e.Len))
		return true
	})
	for _, e := range pending {
		rep.PendingFreeBlocks += int64(e.Len)
		if e.End() > total {
			rep.problem("deferred free %v is beyond the heap (%d blocks)", e, total)
			continue
		}
		if wasSet := allocated.ClearRange(int(e.Start), int(e.Len)); wasSet != int(e.Len) {
			rep.problem("deferred free %v includes %d unallocated blocks", e, int(e.Len)-wasSet)
		}
	}

	var got counters
	it, err := snap.NewIter(nil)
	if err != nil {
		return nil, fmt.Errorf("heapkv: check: %w", indexError("new iterator", err))
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		rep.Keys++
		key := it.Key()
		raw, err := it.ValueAndErr()
		if err != nil {
			return rep, indexError(fmt.Sprintf("check: value of %q", key), err)
		}
		e, err := db.decodeEntry(key, raw)
		if err != nil {
			rep.problem("%v", err)
			continue
		}
		got.add(e.state())
		if !e.isHeap {
			rep.InlineValues++
			continue
		}
		rep.HeapValues++
		for _, x := range e.ptr.extents {
			for b := x.Start; b < x.End(); b++ {
				rep.ReferencedBlocks++
				if b >= total {
					rep.DanglingBlocks++
					rep.problem("key %q: block %d is beyond the heap (%d blocks)", key, b, total)
					continue
				}
				if referenced.Set(int(b)) {
					rep.DoubleRefBlocks++
					rep.problem("key %q: block %d is referenced twice", key, b)
				}
				if !allocated.Test(int(b)) {
					rep.DanglingBlocks++
					rep.problem("key %q: block %d is referenced but not allocated", key, b)
				}
			}
		}
		if _, err := db.readValue(key, &e.ptr); err != nil {
			rep.problem("key %q: %v", key, err)
		} else {
			rep.ValuesVerified++
		}
	}
	if err := it.Error(); err != nil {
		return rep, fmt.Errorf("heapkv: check: %w", indexError("iterate", err))
	}
	for w := range bitmap.WordsFor(int(total)) {
		if leak := allocated.Word(w) &^ referenced.Word(w); leak != 0 {
			rep.LeakedBlocks += int64(bits.OnesCount64(leak))
			rep.problem("blocks allocated but unreferenced in word %d (blocks %d..%d): mask %#x", w, w*64, w*64+63, leak)
		}
	}
	rep.AllocatedBlocks = int64(allocated.Count())
	rep.AllocatedBlocks += rep.PendingFreeBlocks
	if got != want {
		rep.problem("counters %+v, but the index holds %+v", want, got)
	}
	if !rep.OK() {
		return rep, fmt.Errorf("%w: check found %d problems; first: %s", ErrCorrupt, len(rep.Problems), rep.Problems[0])
	}
	return rep, nil
}
