//go:build unix

// Command machinecost measures what the machine charges for the kernel
// entries a storage engine makes: a trivial system call, a one-byte pread
// of a cached page, a small pwrite into pages the page cache holds (in
// small folios, as small writes leave them, and in large ones, as 1 MiB
// writes do), a page fault on fresh anonymous memory, as the Go heap
// takes when it grows, and, on Linux, what mapping 64 KiB of a cached file
// costs: a read fault on a read-only shared map (the kernel maps the
// faulting page and the cached pages around it, 64 KiB by default), and
// madvise(MADV_POPULATE_READ) of the same 64 KiB of a fresh map. Each is
// the CPU time (getrusage, user + system) per call of a loop on one
// goroutine, the median of -runs runs.
//
// BENCHMARKS.md cites it to explain a machine: on a VM whose kernel
// entries go through the hypervisor, these costs set what a write path's
// system calls and allocations cost.
//
//	go run ./cmd/machinecost -dir /tmp
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory for the scratch file (on the file system to measure)")
	runs := flag.Int("runs", 5, "runs of each loop; the median is reported")
	flag.Parse()
	path := filepath.Join(*dir, fmt.Sprintf("machinecost-%d", os.Getpid()))
	defer os.Remove(path)

	report("getppid", *runs, 200_000, nil, func(int) error {
		_, _, errno := syscall.Syscall(syscall.SYS_GETPPID, 0, 0, 0)
		if errno != 0 {
			return errno
		}
		return nil
	})
	for _, fill := range []int{4 << 10, 1 << 20} {
		var f *os.File
		setup := func() error {
			var err error
			if f, err = prepared(path, fill); err != nil {
				return err
			}
			return nil
		}
		one, buf := []byte{0}, make([]byte, 2280)
		report(fmt.Sprintf("pread 1 B, pages written %s at a time", size(fill)), *runs, 100_000, setup, func(i int) error {
			_, err := f.ReadAt(one, int64(i%256)*4096)
			return err
		})
		report(fmt.Sprintf("pwrite 2,280 B, pages written %s at a time", size(fill)), *runs, 100_000, setup, func(i int) error {
			_, err := f.WriteAt(buf, int64(i%400)*2304)
			return err
		})
		if f != nil {
			f.Close()
		}
	}
	if runtime.GOOS == "linux" {
		mapCosts(path, *runs)
	}
	var mem []byte
	report("page fault (first write to an anonymous page)", *runs, 20_000, func() error {
		if mem != nil {
			if err := syscall.Munmap(mem); err != nil {
				return err
			}
		}
		var err error
		mem, err = syscall.Mmap(-1, 0, 20_000*4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		return err
	}, func(i int) error {
		mem[i*4096] = 1
		return nil
	})
}

// mapCosts reports a read fault on a mapped, cached file against
// madvise(MADV_POPULATE_READ), per 64 KiB of the map (Linux).
func mapCosts(path string, runs int) {
	const window, windows = 64 << 10, 2048
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 4096)
	for off := 0; off < window*windows; off += len(b) {
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			log.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		log.Fatal(err)
	}
	var m []byte
	fresh := func() error {
		if m != nil {
			if err := syscall.Munmap(m); err != nil {
				return err
			}
		}
		m, err = syscall.Mmap(int(f.Fd()), 0, window*windows, syscall.PROT_READ, syscall.MAP_SHARED)
		return err
	}
	var sink byte
	report("read fault on a mapped cached file, per 64 KiB", runs, windows, fresh, func(i int) error {
		sink += m[i*window]
		return nil
	})
	const madvPopulateRead = 22
	report("MADV_POPULATE_READ of a cached file, per 64 KiB", runs, windows, fresh, func(i int) error {
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(unsafe.Pointer(&m[i*window])), window, madvPopulateRead)
		if errno != 0 {
			return errno
		}
		return nil
	})
	_ = sink
	if err := syscall.Munmap(m); err != nil {
		log.Fatal(err)
	}
}

// prepared creates a 1 MiB file at path, written fill bytes at a time and
// synced, so that its pages sit in the page cache in folios of about that
// size (kernels with large folios for the file system).
func prepared(path string, fill int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	b := make([]byte, fill)
	for off := 0; off < 1<<20; off += fill {
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// report runs setup and then n calls of op, runs times, and prints the
// median CPU time per call.
func report(name string, runs, n int, setup func() error, op func(i int) error) {
	per := make([]float64, 0, runs)
	for range runs {
		if setup != nil {
			if err := setup(); err != nil {
				log.Fatalf("%s: %v", name, err)
			}
		}
		c0 := cpuTime()
		for i := range n {
			if err := op(i); err != nil {
				log.Fatalf("%s: %v", name, err)
			}
		}
		per = append(per, float64((cpuTime()-c0).Nanoseconds())/float64(n)/1e3)
	}
	slices.Sort(per)
	fmt.Printf("%-50s %7.2f µs CPU per call (median of %d runs of %d; min %.2f, max %.2f)\n", name, per[len(per)/2], runs, n, per[0], per[len(per)-1])
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func size(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
