package runner

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Counting what reaches the disk. /proc/self/io (ReadIO) counts pages as
// they turn dirty, which for a synced workload is not what the device
// writes: a log page flushed and written again counts once per flush. The
// block layer's own counters do count device writes, but for the whole
// device, every process's writes included, and only once write-back has
// happened. So a phase with Config.BlockCounters set runs sync(2) before
// its clients start and again after the engine is closed, outside the
// timed window, and reports the difference of the device's counters:
// everything the phase made the device write, including write-back that
// the engine left to the kernel. On a machine doing other I/O the figure
// includes that I/O too. The device's busy time (I/O ticks) is also read
// when the clients stop, so BlockBusy covers the timed window only.
//
// The counters are those of /sys/dev/block/MAJOR:MINOR/stat for the device
// holding the data directory (a partition has its own). Fields, in order
// (the kernel's Documentation/block/stat.rst): read I/Os, read merges,
// read sectors, read ticks, write I/Os, write merges, write sectors, write
// ticks, in flight, I/O ticks, time in queue, discard I/Os, discard
// merges, discard sectors, discard ticks, flush I/Os, flush ticks. A
// sector is 512 bytes whatever the device's own sector size.

// BlockCounters are a block device's cumulative write counters.
type BlockCounters struct {
	Device       string // MAJOR:MINOR
	WriteIOs     int64  // write requests completed
	WriteSectors int64  // 512-byte sectors written
	Flushes      int64  // cache flush requests completed (0 on kernels before 5.5)
	// BusyMillis is the time the device had requests in flight
	// (io_ticks): over a window, the fraction of it the device was busy.
	BusyMillis int64
	OK         bool
}

// ReadBlockCounters reads the counters of the block device that holds
// dir. OK is false where there are none: not Linux, or a file system
// without a block device (tmpfs, overlay over one).
func ReadBlockCounters(dir string) BlockCounters {
	dev, ok := blockDevice(dir)
	if !ok {
		return BlockCounters{}
	}
	b, err := os.ReadFile("/sys/dev/block/" + dev + "/stat")
	if err != nil {
		return BlockCounters{}
	}
	return parseBlockStat(dev, string(b))
}

// parseBlockStat parses the contents of a block device's stat file.
func parseBlockStat(dev, s string) BlockCounters {
	f := strings.Fields(s)
	if len(f) < 11 {
		return BlockCounters{}
	}
	field := func(i int) int64 {
		if i >= len(f) {
			return 0
		}
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return n
	}
	return BlockCounters{Device: dev, WriteIOs: field(4), WriteSectors: field(6), Flushes: field(15), BusyMillis: field(9), OK: true}
}

// devName is a device number as sysfs names it, MAJOR:MINOR, decoded as
// glibc's gnu_dev_major and gnu_dev_minor do.
func devName(d uint64) string {
	major := (d>>8)&0xfff | (d>>32)&^uint64(0xfff)
	minor := d&0xff | (d>>12)&^uint64(0xff)
	return fmt.Sprintf("%d:%d", major, minor)
}
