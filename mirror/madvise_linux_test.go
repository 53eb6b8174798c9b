package mirror

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// The map asks for random access (adviseRandom): its memory area carries
// the kernel's "rr" flag (VM_RAND_READ) in /proc/self/smaps, so a fault
// reads the page it needs and not the 128 KiB around it.
func TestMapAdvisesRandom(t *testing.T) {
	s, _ := mappedSet(t, 1)
	m := s.view.Load().mapped
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(unsafe.SliceData(m.data))))
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, start) {
			found = true
			continue
		}
		if found && strings.HasPrefix(line, "VmFlags:") {
			if !strings.Contains(line+" ", " rr ") {
				t.Fatalf("the heap's map is not advised random: %s", line)
			}
			return
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no memory area starting at %s in /proc/self/smaps (found %v)", start, found)
}
