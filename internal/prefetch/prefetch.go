// Package prefetch asks the processor to start loading memory that will
// be read soon, without waiting for it.
//
// An ordinary load that misses the caches holds its place in the
// processor's reorder window until memory answers, a few hundred
// nanoseconds, so work after it stalls once the window fills: loading a
// value's bytes early only moves the wait. A prefetch instruction retires
// at once; the line arrives while other work runs. Prefetches are hints:
// they never fault (an address that is not mapped, or a page that is not
// resident, is simply not fetched), so they are safe on a memory-mapped
// file whose disk may fail.
package prefetch

// Lines asks for every 64-byte cache line that b touches.
func Lines(b []byte) {
	if len(b) > 0 {
		lines(b)
	}
}
