//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package mirror

// adviseRandom is a no-op on the other platforms that map, whose syscall
// package has no madvise.
func adviseRandom([]byte) {}
