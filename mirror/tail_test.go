package mirror

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// TestZeroAheadNeverOverwritesWrites runs writers that extend the device
// block by block while ZeroAhead keeps writing zeros just past them: no
// block a WriteAt wrote may read back as anything but its bytes, on either
// replica.
func TestZeroAheadNeverOverwritesWrites(t *testing.T) {
	f := newFixture(t, 2)
	const writers, perWriter = 8, 300
	var next atomic.Uint64 // the next block no writer has taken
	var wg sync.WaitGroup
	stop := make(chan struct{})
	zeroErr := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		defer close(zeroErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Just past the writers, often inside the chunk they write next.
			if err := f.set.ZeroAhead(t.Context(), next.Load()+uint64(rng.IntN(64))); err != nil {
				zeroErr <- err
				return
			}
		}
	}()
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range perWriter {
				n := 1 + rng.IntN(8)
				b := next.Add(uint64(n)) - uint64(n)
				if err := f.write(b, n, uint64(w)<<32|b); err != nil {
					t.Errorf("write %d+%d: %v", b, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-zeroErr; err != nil {
		t.Fatalf("ZeroAhead: %v", err)
	}
	if f.set.Zeroed() == 0 {
		t.Fatal("ZeroAhead wrote no zeros: the test exercised nothing")
	}
	for b, tag := range f.content {
		for i := range f.paths {
			if got := f.readFile(i, b); !bytes.Equal(got, block(b, tag)) {
				t.Fatalf("replica %d block %d does not hold its write (zeros over it?)", i, b)
			}
		}
	}
}

// TestZeroAheadFromTheEnd checks where zeros go: only past the last write,
// up to the block asked for, and from the cut after Truncate (on the
// operating system's file system: MemFS cannot truncate).
func TestZeroAheadFromTheEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heap")
	cfg := Config{FS: vfs.Default, DBID: testID, BlockSize: testBS, Logger: slog.New(slog.DiscardHandler)}
	s, err := Create(cfg, []string{path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write := func(b uint64, n int, tag uint64) {
		t.Helper()
		var p []byte
		for i := range n {
			p = append(p, block(b+uint64(i), tag)...)
		}
		if err := s.WriteAt(p, b); err != nil {
			t.Fatal(err)
		}
	}
	check := func(b, tag uint64) {
		t.Helper()
		p := make([]byte, testBS)
		if err := s.ReadAt(p, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, block(b, tag)) {
			t.Fatalf("block %d does not hold its write", b)
		}
	}
	size := func() int64 {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	write(0, 10, 1)
	if err := s.ZeroAhead(t.Context(), 5); err != nil || s.Zeroed() != 0 {
		t.Fatalf("ZeroAhead below the end: err %v, zeroed %d bytes; want nothing", err, s.Zeroed())
	}
	if err := s.ZeroAhead(t.Context(), 3000); err != nil {
		t.Fatal(err)
	}
	if got, want := size(), s.offset(3000); got != want {
		t.Fatalf("file size %d after ZeroAhead to block 3000, want %d", got, want)
	}
	if got, want := s.Zeroed(), s.offset(3000)-s.offset(10); got != want {
		t.Fatalf("Zeroed %d, want %d", got, want)
	}
	for b := range uint64(10) {
		check(b, 1)
	}
	if err := s.Truncate(20); err != nil {
		t.Fatal(err)
	}
	if err := s.ZeroAhead(t.Context(), 40); err != nil {
		t.Fatal(err)
	}
	if got, want := size(), s.offset(40); got != want {
		t.Fatalf("file size %d after Truncate(20) and ZeroAhead to 40, want %d", got, want)
	}
	write(30, 2, 2)
	if err := s.ZeroAhead(t.Context(), 32); err != nil {
		t.Fatal(err)
	}
	check(31, 2)
	check(9, 1)
}

// TestZeroAheadErrorsChangeNothing fails the zeros' write and then their
// flush: ZeroAhead reports each, the replica stays in sync, and later
// writes and syncs work.
func TestZeroAheadErrorsChangeNothing(t *testing.T) {
	f := newFixture(t, 1)
	f.mustWrite(0, 4, 1)
	for _, kind := range []errorfs.OpKind{errorfs.OpFileWriteAt, errorfs.OpFileSyncData} {
		f.inj.fail(f.paths[0], kind)
		err := f.set.ZeroAhead(t.Context(), 4+uint64(kind)*100)
		f.inj.heal()
		if !errors.Is(err, errorfs.ErrInjected) {
			t.Fatalf("ZeroAhead with %v failing: %v, want the injected error", kind, err)
		}
		if st := f.set.Status()[0].State; st != InSync {
			t.Fatalf("replica %v after a failed ZeroAhead (%v), want in sync", st, kind)
		}
	}
	f.mustWrite(4, 1, 2)
	if err := f.set.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := f.readFile(0, 4); !bytes.Equal(got, block(4, 2)) {
		t.Fatal("write after failed ZeroAhead lost")
	}
}
