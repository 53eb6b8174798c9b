package mirror

import "syscall"

// adviseRandom tells the kernel that reads of the map b are random. It is
// advice: a refusal changes nothing but the readahead.
func adviseRandom(b []byte) { _ = syscall.Madvise(b, syscall.MADV_RANDOM) }
