package keyfilter

import (
	"fmt"
	"sync"
	"testing"
)

// Every added key is reported, across generations.
func TestNoFalseNegatives(t *testing.T) {
	f := New()
	const n = 5 * firstCapacity // several generations
	for i := range n {
		f.Add(fmt.Appendf(nil, "key-%d", i))
	}
	if g := len(*f.gens.Load()); g < 3 {
		t.Fatalf("%d generations after %d keys; want at least 3", g, n)
	}
	for i := range n {
		if k := fmt.Appendf(nil, "key-%d", i); !f.MayContain(k) {
			t.Fatalf("added key %q is not reported", k)
		}
	}
	// Keys that were false positives when added took no room.
	if k := f.Keys(); k > n || k < n*97/100 {
		t.Fatalf("Keys() = %d, want at most %d and at least 97%% of it", k, n)
	}
}

// Keys never added are rarely reported: a few percent at most over
// several generations.
func TestFalsePositiveRate(t *testing.T) {
	f := New()
	const n = 3 * firstCapacity
	for i := range n {
		f.Add(fmt.Appendf(nil, "in-%d", i))
	}
	const probesOut = 100000
	fp := 0
	for i := range probesOut {
		if f.MayContain(fmt.Appendf(nil, "out-%d", i)) {
			fp++
		}
	}
	rate := float64(fp) / probesOut
	gens := len(*f.gens.Load())
	t.Logf("%d keys, %d generations, %d bytes: false-positive rate %.4f", n, gens, f.Bytes(), rate)
	if rate > 0.015*float64(gens) {
		t.Fatalf("false-positive rate %.4f with %d generations; want at most %.4f", rate, gens, 0.015*float64(gens))
	}
}

// Queries running beside adds see every add that returned before they
// started (run with -race).
func TestConcurrentAddAndQuery(t *testing.T) {
	f := New()
	const n = 2 * firstCapacity
	var added sync.WaitGroup
	done := make(chan int, n)
	added.Add(1)
	go func() {
		defer added.Done()
		for i := range n {
			f.Add(fmt.Appendf(nil, "c-%d", i))
			done <- i
		}
		close(done)
	}()
	var errs []string
	for i := range done {
		if k := fmt.Appendf(nil, "c-%d", i); !f.MayContain(k) && len(errs) < 5 {
			errs = append(errs, string(k))
		}
	}
	added.Wait()
	if len(errs) > 0 {
		t.Fatalf("keys added before the query were not reported: %v", errs)
	}
}

// Adding keys the filter already reports takes no room: a filter of a
// fixed key set stays one size however often the keys are added again.
func TestReAddsTakeNoRoom(t *testing.T) {
	f := New()
	const n = firstCapacity / 2
	for round := range 20 {
		for i := range n {
			f.Add(fmt.Appendf(nil, "key-%d", i))
		}
		if round == 0 {
			continue
		}
		if g := len(*f.gens.Load()); g != 1 || f.Keys() > n {
			t.Fatalf("after %d rounds of the same %d keys: %d generations, %d keys counted; want 1 and at most %d", round+1, n, g, f.Keys(), n)
		}
	}
}
