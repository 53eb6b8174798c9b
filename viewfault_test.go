package heapkv_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/heapkv/heapkv"
)

// A view's function reads the heap's map itself, so the disk can fail
// under it after the value was verified. Here the function, on its first
// call, truncates the mapped replica's file from another descriptor and
// then reads the slice: the read faults (SIGBUS). The fault must not crash
// the process. With a mirror the value is read again from the other
// replica (and repaired) and the function is called a second time with
// the right bytes; with one replica the view fails with ErrCorrupt after
// that one interrupted call. Both DB.ViewValue and Iterator.ViewValue.
func TestViewFaultInsideFunction(t *testing.T) {
	for _, mirrored := range []bool{true, false} {
		for _, how := range []string{"db", "iterator"} {
			t.Run(fmt.Sprintf("mirrored=%v/%s", mirrored, how), func(t *testing.T) {
				testViewFaultInsideFunction(t, mirrored, how)
			})
		}
	}
}

func testViewFaultInsideFunction(t *testing.T, mirrored bool, how string) {
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i), 0x3c, byte(i >> 8), 0xc3}, 2500) }
	db, s := openMappedDB(t, mirrored, 20, value)
	primary := db.Replicas()[0].Path
	const target = 17
	calls := 0
	var got []byte
	var err error
	fn := func(v []byte) error {
		calls++
		if calls == 1 {
			if err := os.Truncate(primary, int64(s.BlockSize)); err != nil {
				return err
			}
		}
		got = bytes.Clone(v)
		return nil
	}
	key := fmt.Appendf(nil, "k%03d", target)
	switch how {
	case "db":
		err = db.ViewValue(key, fn)
	case "iterator":
		it, ierr := db.NewIter(nil)
		if ierr != nil {
			t.Fatal(ierr)
		}
		if !it.SeekGE(key) || !bytes.Equal(it.Key(), key) {
			t.Fatalf("SeekGE(%s) did not find it", key)
		}
		err = it.ViewValue(fn)
		it.Close()
	}
	after, serr := db.Stats()
	if serr != nil {
		t.Fatal(serr)
	}
	if after.HeapMapFaults == s.HeapMapFaults {
		t.Fatalf("no fault on the map: the function did not read the value in the map (%d calls, %v)", calls, err)
	}
	if mirrored {
		if err != nil || calls != 2 || !bytes.Equal(got, value(target)) {
			t.Fatalf("mirrored: %d calls, %v, value right %v; want a second call with the value from the mirror", calls, err, bytes.Equal(got, value(target)))
		}
		if after.ReadRepairs == 0 {
			t.Fatal("the value was not repaired from the mirror")
		}
	} else if !errors.Is(err, heapkv.ErrCorrupt) || calls != 1 {
		t.Fatalf("one replica: %d calls, %v; want one interrupted call and ErrCorrupt", calls, err)
	}
	t.Logf("%d calls, %d map faults, %d read repairs, %v", calls, after.HeapMapFaults-s.HeapMapFaults, after.ReadRepairs, err)
}
