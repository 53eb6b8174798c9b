package heapkv

import (
	"strings"
	"unsafe"
)

// valueBuf returns an empty slice with room for exactly n bytes whose
// memory the runtime has not zeroed, for a value Get returns: the caller
// appends all n bytes before anything reads the slice.
//
// make([]byte, n) zeroes n bytes that the copy out of the heap then
// overwrites, and append to a nil slice zeroes what it allocates past the
// copy: for a value above 32 KiB, a large object rounded up to 8 KiB
// pages, that is up to 8 KiB a value. strings.Builder.Grow is the
// standard library's one way to allocate without zeroing; the slice is
// taken from the builder's only string, which nothing else sees.
func valueBuf(n int) []byte {
	if n <= 0 {
		return nil
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteByte(0) // a non-empty string points at the allocation
	return unsafe.Slice(unsafe.StringData(b.String()), n)[:0]
}
