//go:build !linux

package mirror

// canPopulate: only Linux populates a map ahead of reads (populate_linux.go);
// elsewhere a page is mapped by its first read's fault.
const canPopulate = false

const pageSize = 4096

func populateRange([]byte) error { return nil }

func populateResident([]byte) int64 { return 0 }
