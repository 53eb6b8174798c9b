package runner

import (
	"os"
	"testing"
)

func TestDevName(t *testing.T) {
	for _, c := range []struct {
		dev  uint64
		want string
	}{
		{0xfe00, "254:0"},          // virtio disk
		{0x0801, "8:1"},            // a SCSI partition
		{0x1001_0303, "259:65539"}, // minor above 255: its high bits sit above bit 20
	} {
		if got := devName(c.dev); got != c.want {
			t.Errorf("devName(%#x) = %s, want %s", c.dev, got, c.want)
		}
	}
}

func TestParseBlockStat(t *testing.T) {
	// Seventeen fields (kernels since 5.5): write I/Os, write sectors and
	// flush I/Os are the 5th, 7th and 16th, I/O ticks the 10th.
	got := parseBlockStat("254:0", "  100 2 3000 40 500 6 70000 80 0 90 100 11 12 13 14 1500 16\n")
	want := BlockCounters{Device: "254:0", WriteIOs: 500, WriteSectors: 70000, Flushes: 1500, BusyMillis: 90, OK: true}
	if got != want {
		t.Errorf("17 fields: got %+v, want %+v", got, want)
	}
	// Eleven fields (older kernels): no flush count.
	got = parseBlockStat("8:1", "1 2 3 4 5 6 7 8 9 10 11")
	want = BlockCounters{Device: "8:1", WriteIOs: 5, WriteSectors: 7, BusyMillis: 10, OK: true}
	if got != want {
		t.Errorf("11 fields: got %+v, want %+v", got, want)
	}
	if got := parseBlockStat("1:2", "1 2 3"); got.OK {
		t.Errorf("3 fields: got %+v, want not OK", got)
	}
}

// TestReadBlockCounters reads the counters of the test directory's
// device: present exactly when sysfs has a stat file for it (a tmpfs or
// overlay directory has none).
func TestReadBlockCounters(t *testing.T) {
	dir := t.TempDir()
	got := ReadBlockCounters(dir)
	dev, ok := blockDevice(dir)
	_, err := os.Stat("/sys/dev/block/" + dev + "/stat")
	if want := ok && err == nil; got.OK != want {
		t.Fatalf("ReadBlockCounters(%s) = %+v; device %q, stat file: %v", dir, got, dev, err)
	}
	if got.OK && (got.Device != dev || got.WriteSectors < 0 || got.WriteIOs < 0) {
		t.Fatalf("ReadBlockCounters(%s) = %+v, device %s", dir, got, dev)
	}
}
