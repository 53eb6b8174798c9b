//go:build !linux

package runner

// blockDevice reports no device: block counters are read on Linux only.
func blockDevice(string) (string, bool) { return "", false }

// syncAll does nothing where block counters are not read.
func syncAll() {}
