package mirror

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// mappedSet creates a set of n replicas on the real file system with
// mapped reads.
func mappedSet(t *testing.T, n int) (*Set, []string) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i := range n {
		paths = append(paths, filepath.Join(dir, "heap"+string(rune('0'+i))))
	}
	s, err := Create(Config{FS: vfs.Default, DBID: testID, BlockSize: testBS, Logger: slog.New(slog.DiscardHandler), MapReads: true}, paths)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if !s.Mapped() {
		t.Fatal("a set on the operating system's file system with MapReads does not map its first replica")
	}
	return s, paths
}

func mustReadMapped(t *testing.T, s *Set, b uint64, want []byte) {
	t.Helper()
	p := make([]byte, len(want))
	f0 := s.MapFaults()
	if err := s.ReadMapped(p, b); err != nil {
		t.Fatalf("ReadMapped block %d: %v", b, err)
	}
	if !bytes.Equal(p, want) {
		t.Fatalf("ReadMapped block %d returned other bytes than were written", b)
	}
	f1 := s.MapFaults()
	out, err := s.AppendMapped([]byte("prefix"), b, len(want))
	if err != nil {
		t.Fatalf("AppendMapped block %d: %v", b, err)
	}
	if string(out[:6]) != "prefix" || !bytes.Equal(out[6:], want) {
		t.Fatalf("AppendMapped block %d returned other bytes than were written", b)
	}
	if f2 := s.MapFaults(); (f1 > f0) != (f2 > f1) {
		t.Fatalf("block %d: ReadMapped faulted %d times on the mapping, AppendMapped %d", b, f1-f0, f2-f1)
	}
}

// The mapping follows the file as it grows (no remap), and a block never
// written reads as zeros, as with ReadAt.
func TestReadMappedFollowsGrowth(t *testing.T) {
	s, _ := mappedSet(t, 1)
	for b := uint64(0); b < 4096; b += 97 {
		if err := s.WriteAt(block(b, 7), b); err != nil {
			t.Fatal(err)
		}
		mustReadMapped(t, s, b, block(b, 7))
	}
	mustReadMapped(t, s, 3, make([]byte, testBS))
	if s.MapFaults() != 0 {
		t.Fatalf("%d faults reading written blocks", s.MapFaults())
	}
}

// A real SIGBUS: the mapped replica file is truncated from another
// descriptor, so the mapped pages past its new end fault. ReadMapped must
// not crash: it counts the fault and falls back to ReadAt, which reads
// what the file now holds (zeros past its end).
func TestReadMappedFaultFallsBack(t *testing.T) {
	s, paths := mappedSet(t, 1)
	for b := range uint64(64) {
		if err := s.WriteAt(block(b, 1), b); err != nil {
			t.Fatal(err)
		}
	}
	mustReadMapped(t, s, 40, block(40, 1))
	if err := os.Truncate(paths[0], int64(10*testBS)); err != nil {
		t.Fatal(err)
	}
	mustReadMapped(t, s, 40, make([]byte, testBS))
	if s.MapFaults() == 0 {
		t.Fatal("a read past the end of the truncated file did not fault on the mapping")
	}
	mustReadMapped(t, s, 2, block(2, 1)) // still inside the file
}

// When the first in-sync replica changes, reads go through a mapping of
// the new one; the old mapping stays valid until Close.
func TestReadMappedFollowsReplicaChange(t *testing.T) {
	s, _ := mappedSet(t, 2)
	if err := s.WriteAt(block(5, 3), 5); err != nil {
		t.Fatal(err)
	}
	old := s.view.Load().mapped
	if err := s.Detach(0, 0); err != nil {
		t.Fatal(err)
	}
	v := s.view.Load()
	if v.mapped == nil || v.mapped == old || v.readable[0].r.id != 1 {
		t.Fatalf("after detaching replica 0: mapping %p (was %p), reading replica %d", v.mapped, old, v.readable[0].r.id)
	}
	mustReadMapped(t, s, 5, block(5, 3))
	if err := s.WriteAt(block(6, 4), 6); err != nil {
		t.Fatal(err)
	}
	mustReadMapped(t, s, 6, block(6, 4))
	if !old.copyOut(make([]byte, testBS), s.offset(5)) {
		t.Fatal("the retired mapping was unmapped before Close")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(s.retired) != 0 || s.replicas[0].mapped != nil || s.replicas[1].mapped != nil {
		t.Fatal("Close left mappings")
	}
}

// ViewMapped hands fn the bytes in the mapping: fn's error comes back, a
// fault while fn reads (the file truncated under it) reports false and is
// counted, a range past the reservation reports false without calling fn,
// and any other panic in fn goes on.
func TestViewMapped(t *testing.T) {
	s, paths := mappedSet(t, 1)
	for b := range uint64(64) {
		if err := s.WriteAt(block(b, 3), b); err != nil {
			t.Fatal(err)
		}
	}
	errFn := errors.New("fn's error")
	ok, err := s.ViewMapped(5, testBS, func(b []byte) error {
		if !bytes.Equal(b, block(5, 3)) {
			t.Error("ViewMapped passed other bytes than were written")
		}
		if cap(b) != testBS {
			t.Errorf("the slice's capacity is %d, want %d: fn could append into the mapping", cap(b), testBS)
		}
		return errFn
	})
	if !ok || err != errFn {
		t.Fatalf("ViewMapped of written blocks: %v, %v", ok, err)
	}
	if err := s.ReadAt(make([]byte, testBS), 1<<55); err == nil {
		t.Fatal("ReadAt of block 2^55, whose offset wraps around int64 to block 0's, succeeded")
	}
	if err := s.ReadMapped(make([]byte, testBS), 1<<55); err == nil {
		t.Fatal("ReadMapped of block 2^55, whose offset wraps around int64 to block 0's, succeeded")
	}
	called := false
	if ok, err := s.ViewMapped(1<<55, testBS, func([]byte) error { called = true; return nil }); ok || err != nil || called {
		t.Fatalf("ViewMapped past the reservation: %v, %v, fn called %v", ok, err, called)
	}
	func() {
		defer func() {
			if r := recover(); r != "fn's panic" {
				t.Fatalf("fn's own panic became %v", r)
			}
		}()
		s.ViewMapped(5, testBS, func([]byte) error { panic("fn's panic") })
	}()
	faults := s.MapFaults()
	var sum int
	ok, err = s.ViewMapped(40, testBS, func(b []byte) error {
		if err := os.Truncate(paths[0], int64(10*testBS)); err != nil {
			return err
		}
		for _, c := range b {
			sum += int(c)
		}
		return errFn
	})
	if ok || err != nil || s.MapFaults() != faults+1 {
		t.Fatalf("fault inside fn: %v, %v, %d faults counted; want false, nil, 1", ok, err, s.MapFaults()-faults)
	}
}

// TestPrefetchMapped: prefetching a range changes nothing; a range outside
// the mapping is left alone, and pages past the end of a file that shrank,
// which a load would fault on, are prefetched without a fault (none
// counted either: the read that follows meets it).
func TestPrefetchMapped(t *testing.T) {
	s, paths := mappedSet(t, 1)
	for b := range uint64(64) {
		if err := s.WriteAt(block(b, 7), b); err != nil {
			t.Fatal(err)
		}
	}
	s.PrefetchMapped(3, 5*testBS+17) // not whole blocks
	s.PrefetchMapped(1<<55, testBS)  // past the reservation: nothing
	s.PrefetchMapped(3, 0)
	if err := os.Truncate(paths[0], int64(10*testBS)); err != nil {
		t.Fatal(err)
	}
	faults := s.MapFaults()
	s.PrefetchMapped(40, 4*testBS) // past the end of the file now: a load would fault
	if got := s.MapFaults(); got != faults {
		t.Fatalf("a prefetch counted a fault: %d, want %d", got, faults)
	}
	got := make([]byte, testBS)
	if err := s.ReadMapped(got, 5); err != nil || !bytes.Equal(got, block(5, 7)) {
		t.Fatalf("block 5 after the prefetches: %v", err)
	}
}
