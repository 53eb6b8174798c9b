package heapkv

import "testing"

// TestValueBuf checks that valueBuf's buffers hold exactly what they are
// asked for and are separate allocations.
func TestValueBuf(t *testing.T) {
	if b := valueBuf(0); b != nil {
		t.Fatalf("valueBuf(0) = %v, want nil", b)
	}
	for _, n := range []int{1, 100, 4100, 32 << 10, 40000, 1 << 20} {
		a, b := valueBuf(n), valueBuf(n)
		if len(a) != 0 || cap(a) != n {
			t.Fatalf("valueBuf(%d): len %d cap %d, want 0 and %d", n, len(a), cap(a), n)
		}
		first := &a[:n][0]
		a = append(a, make([]byte, n)...)
		b = append(b, make([]byte, n)...)
		if &a[0] != first {
			t.Fatalf("valueBuf(%d): appending %d bytes reallocated", n, n)
		}
		for i := range a {
			a[i] = 1
		}
		for i, c := range b {
			if c != 0 {
				t.Fatalf("valueBuf(%d): two buffers share byte %d", n, i)
			}
		}
	}
}
