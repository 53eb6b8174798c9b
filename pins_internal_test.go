package heapkv

import (
	"testing"
	"unsafe"
)

// The pin shards are padded to one 64-byte cache line each (pins.go).
func TestPinShardFillsACacheLine(t *testing.T) {
	if got := unsafe.Sizeof(pinShard{}); got != 64 {
		t.Fatalf("pinShard is %d bytes, want 64", got)
	}
}
