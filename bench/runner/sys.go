package runner

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/heapkv/heapkv/enginebench"
)

// DiskUsage returns the bytes allocated on disk (st_blocks*512) and the
// apparent size of the regular files under dir, except heapkv's space
// reserve (RESERVE, a fixed fallocated file of Options.DiskReserve bytes):
// space amplification is about what the data costs.
func DiskUsage(dir string) (allocated, apparent int64, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // files vanish under a running engine
			}
			return err
		}
		if !d.Type().IsRegular() || d.Name() == "RESERVE" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		apparent += info.Size()
		if n, ok := enginebench.AllocatedBytes(info); ok {
			allocated += n
		} else {
			allocated += info.Size()
		}
		return nil
	})
	return allocated, apparent, err
}

// IOCounters are the process's I/O accounting (/proc/self/io, Linux).
type IOCounters struct {
	ReadBytes, WriteBytes, CancelledWriteBytes int64
	OK                                         bool
}

// ReadIO reads /proc/self/io; OK is false where it is not available.
func ReadIO() IOCounters {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return IOCounters{}
	}
	defer f.Close()
	c := IOCounters{OK: true}
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "read_bytes":
			c.ReadBytes = n
		case "write_bytes":
			c.WriteBytes = n
		case "cancelled_write_bytes":
			c.CancelledWriteBytes = n
		}
	}
	return c
}
