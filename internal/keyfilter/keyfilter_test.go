package keyfilter

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
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

// Keys never added are rarely reported: a full generation of 16 bits a
// key in 512-bit blocks answers "maybe" for about 0.1% of them; the test
// allows 0.15% a generation.
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
	if rate > 0.0015*float64(gens) {
		t.Fatalf("false-positive rate %.4f with %d generations; want at most %.4f", rate, gens, 0.0015*float64(gens))
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

// A decoded filter reports every key the saved one held, counts the same
// keys, and keeps growing from where the saved one stopped.
func TestEncodingRoundTrip(t *testing.T) {
	f := New()
	const n = 3*firstCapacity + 123 // two full generations and a partial one
	for i := range n {
		f.Add(fmt.Appendf(nil, "key-%d", i))
	}
	b, err := f.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if g.Keys() != f.Keys() || g.Bytes() != f.Bytes() {
		t.Fatalf("decoded: %d keys in %d bytes, saved %d in %d", g.Keys(), g.Bytes(), f.Keys(), f.Bytes())
	}
	for i := range n {
		if k := fmt.Appendf(nil, "key-%d", i); !g.MayContain(k) {
			t.Fatalf("decoded filter lost %q", k)
		}
	}
	fp := 0
	for i := range 20000 {
		if g.MayContain(fmt.Appendf(nil, "out-%d", i)) != f.MayContain(fmt.Appendf(nil, "out-%d", i)) {
			t.Fatal("decoded filter answers differently from the saved one")
		}
		if g.MayContain(fmt.Appendf(nil, "out-%d", i)) {
			fp++
		}
	}
	if fp > 20000/100 {
		t.Fatalf("%d false positives in 20000", fp)
	}
	for i := n; i < 5*firstCapacity; i++ {
		g.Add(fmt.Appendf(nil, "key-%d", i))
	}
	if len(*g.gens.Load()) < 3 {
		t.Fatal("the decoded filter did not grow")
	}
	for i := range 5 * firstCapacity {
		if k := fmt.Appendf(nil, "key-%d", i); !g.MayContain(k) {
			t.Fatalf("grown filter lost %q", k)
		}
	}
}

// An added key sets at most probes bits, all in one 512-bit block: one
// cache line per generation for every query. Two probes of a key seldom
// share a bit.
func TestAddSetsOneBlock(t *testing.T) {
	total := 0
	for i := range 200 {
		f := New()
		f.Add(fmt.Appendf(nil, "key-%d", i))
		g := (*f.gens.Load())[0]
		blocks := map[int]bool{}
		set := 0
		for w := range g.words {
			if n := bits.OnesCount64(g.words[w].Load()); n > 0 {
				set += n
				blocks[w/blockWords] = true
			}
		}
		if set == 0 || set > probes || len(blocks) != 1 {
			t.Fatalf("key %d set %d bits in %d blocks; want 1 to %d bits in one block", i, set, len(blocks), probes)
		}
		total += set
	}
	if total < 200*probes*97/100 {
		t.Fatalf("200 keys set %d bits; want about %d: their probes coincide", total, 200*probes)
	}
}

// A filter saved by the first version (plain generations) is refused with
// ErrOldVersion, not ErrCorrupt: its owner rebuilds it without alarm.
func TestDecodeRefusesVersion1(t *testing.T) {
	v1 := []byte{1, 0, 0, 1, 0x80, 0x80, 0x04} // no keys, one generation of 65536
	v1 = append(v1, make([]byte, 65536*10/64*8)...)
	_, err := Decode(v1)
	if !errors.Is(err, ErrOldVersion) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Decode(version 1) = %v; want ErrOldVersion and not ErrCorrupt", err)
	}
}

// Damaged encodings are errors wrapping ErrCorrupt, whatever the damage.
func TestDecodeRejectsDamage(t *testing.T) {
	f := New()
	for i := range 1000 {
		f.Add(fmt.Appendf(nil, "k%d", i))
	}
	good, _ := f.AppendBinary(nil)
	cases := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{9}, good[1:]...),
		"cut":           good[:len(good)-1],
		"trailing":      append(append([]byte{}, good...), 0),
		"no generation": {encodingVersion, 0, 0, 0},
		"capacity":      {encodingVersion, 0, 0, 1, 5},
	}
	for name, b := range cases {
		if _, err := Decode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Decode = %v, want ErrCorrupt", name, err)
		}
	}
}

// FuzzDecode: no input makes Decode panic or allocate beyond its length;
// what it accepts encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	k := New()
	for i := range 100 {
		k.Add(fmt.Appendf(nil, "k%d", i))
	}
	good, _ := k.AppendBinary(nil)
	f.Add(good)
	f.Add([]byte{encodingVersion, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, _ := g.AppendBinary(nil)
		if !bytes.Equal(again, b) {
			t.Fatal("accepted encoding does not round-trip")
		}
	})
}

// benchKeys is the filter size of the benchmarks: the 2.4 million keys of
// the YCSB 1 KB data set of BENCHMARKS.md (six generations).
const benchKeys = 2400000

// BenchmarkMayContainAbsent queries keys never added to a filter of
// benchKeys keys: the question a load of new keys asks for every write.
func BenchmarkMayContainAbsent(b *testing.B) {
	f := New()
	for i := range benchKeys {
		f.Add(fmt.Appendf(nil, "user%d", i))
	}
	keys := make([][]byte, 1<<16)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "absent%d", i)
	}
	fp := 0
	b.ResetTimer()
	for i := range b.N {
		if f.MayContain(keys[i%len(keys)]) {
			fp++
		}
	}
	b.ReportMetric(float64(fp)/float64(b.N), "false-positives/op")
}

// BenchmarkAdd adds benchKeys distinct keys to a new filter per round.
func BenchmarkAdd(b *testing.B) {
	keys := make([][]byte, benchKeys)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "user%d", i)
	}
	b.ResetTimer()
	for range b.N {
		f := New()
		for _, k := range keys {
			f.Add(k)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchKeys, "ns/key")
}
