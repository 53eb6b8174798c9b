package bitmap

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
)

// model is the slow reference the random test compares Bitmap against.
type model []bool

func (m model) countRange(i, n int) int {
	c := 0
	for _, v := range m[i : i+n] {
		if v {
			c++
		}
	}
	return c
}

func (m model) findClearRun(from, n int) int {
	for s := max(from, 0); s+n <= len(m); s++ {
		if m.countRange(s, n) == 0 {
			return s
		}
	}
	return -1
}

func (m model) next(i int, v bool) int {
	for ; i < len(m); i++ {
		if m[i] == v {
			return i
		}
	}
	return -1
}

func (m model) runs(v bool) [][2]int {
	var out [][2]int
	for i := 0; i < len(m); {
		if m[i] != v {
			i++
			continue
		}
		j := i
		for j < len(m) && m[j] == v {
			j++
		}
		out = append(out, [2]int{i, j - i})
		i = j
	}
	return out
}

func collectRuns(seq func(func(int, int) bool)) [][2]int {
	var out [][2]int
	for s, n := range seq {
		out = append(out, [2]int{s, n})
	}
	return out
}

func TestRandomAgainstModel(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 130, 640, 1000} {
		rng := rand.New(rand.NewPCG(uint64(n), 7))
		b := New(n)
		m := make(model, n)
		for step := 0; step < 3000; step++ {
			i, k := 0, 0
			if n > 0 {
				i = rng.IntN(n + 1)
				// Mostly short ranges, sometimes long ones.
				k = rng.IntN(min(n-i, 8) + 1)
				if rng.IntN(8) == 0 {
					k = rng.IntN(n - i + 1)
				}
			}
			switch op := rng.IntN(6); {
			case op == 0 && i < n:
				eq(t, m[i], b.Set(i))
				m[i] = true
			case op == 1 && i < n:
				eq(t, m[i], b.Clear(i))
				m[i] = false
			case op == 2:
				eq(t, m.countRange(i, k), b.SetRange(i, k), "SetRange(%d,%d)", i, k)
				for j := i; j < i+k; j++ {
					m[j] = true
				}
			case op == 3:
				eq(t, m.countRange(i, k), b.ClearRange(i, k), "ClearRange(%d,%d)", i, k)
				for j := i; j < i+k; j++ {
					m[j] = false
				}
			default:
				// read-only checks below
			}
			eq(t, m.countRange(i, k), b.CountRange(i, k))
			eq(t, m.countRange(i, k) == k, b.AllSet(i, k))
			eq(t, m.countRange(i, k) == 0, b.NoneSet(i, k))
			eq(t, m.next(i, true), b.NextSet(i))
			eq(t, m.next(i, false), b.NextClear(i))
			if i < n {
				eq(t, m[i], b.Test(i))
			}
			if k > 0 {
				eq(t, m.findClearRun(i, k), b.FindClearRun(i, k), "FindClearRun(%d,%d) in %v", i, k, b)
			}
			if step%50 == 0 {
				eq(t, m.countRange(0, n), b.Count())
				eq(t, m.runs(true), collectRuns(b.Runs()))
				eq(t, m.runs(false), collectRuns(b.ClearRuns()))
				var ones []int
				for i := range b.Ones() {
					ones = append(ones, i)
				}
				var want []int
				for i, v := range m {
					if v {
						want = append(want, i)
					}
				}
				eq(t, want, ones)
				c := b.Clone()
				isTrue(t, c.Equal(b))
				w, err := FromWords(n, b.AppendWords(nil))
				if err != nil {
					t.Fatal(err)
				}
				isTrue(t, w.Equal(b))
				if n > 0 {
					// The clone is independent of the original.
					c.Set(0)
					eq(t, m[0], b.Test(0))
					eq(t, !m[0], !c.Equal(b))
				}
			}
		}
	}
}

func TestFindClearRunEdges(t *testing.T) {
	b := New(192)
	eq(t, 0, b.FindClearRun(0, 192))
	eq(t, -1, b.FindClearRun(1, 192))
	eq(t, 5, b.FindClearRun(-3+8, 1))
	b.SetRange(60, 10) // spans words 0 and 1
	eq(t, 0, b.FindClearRun(0, 60))
	eq(t, 70, b.FindClearRun(0, 61))
	eq(t, 70, b.FindClearRun(65, 122))
	eq(t, -1, b.FindClearRun(65, 123))
	b.SetRange(0, 192)
	eq(t, -1, b.FindClearRun(0, 1))
	b.Clear(191)
	eq(t, 191, b.FindClearRun(0, 1))
	eq(t, -1, b.FindClearRun(0, 2))
	panics(t, true, func() { b.FindClearRun(0, 0) })
}

func TestFromWordsErrors(t *testing.T) {
	_, err := FromWords(65, []uint64{0})
	if err == nil {
		t.Fatal("want error")
	}
	_, err = FromWords(65, []uint64{0, 2})
	if err == nil {
		t.Fatal("bit 65 is beyond the length: want error")
	}
	_, err = FromWords(-1, nil)
	if err == nil {
		t.Fatal("want error")
	}
	b, err := FromWords(65, []uint64{^uint64(0), 1})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, 65, b.Count())
	eq(t, -1, b.NextClear(0))
	eq(t, "{0-64}", b.String())
}

func TestOutOfRangePanics(t *testing.T) {
	b := New(10)
	panics(t, true, func() { b.Test(10) })
	panics(t, true, func() { b.Set(-1) })
	panics(t, true, func() { b.SetRange(5, 6) })
	panics(t, true, func() { b.ClearRange(11, 0) })
	panics(t, false, func() { b.ClearRange(10, 0) })
	panics(t, true, func() { New(-1) })
}

// TestConcurrentSetClear has one owner set bits while other goroutines clear
// disjoint bits of the same words; with atomic words no update may be lost.
func TestConcurrentSetClear(t *testing.T) {
	const n = 64 * 8
	b := New(n)
	b.SetRange(0, n)
	var wg sync.WaitGroup
	// Clearers clear the even bits; the owner repeatedly sets and clears odd bits.
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * 2; i < n; i += 8 {
				isTrue(t, b.Clear(i))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 50 {
			for i := 1; i < n; i += 2 {
				b.Clear(i)
				b.Set(i)
			}
		}
	}()
	wg.Wait()
	eq(t, n/2, b.Count())
	for i := range n {
		eq(t, i%2 == 1, b.Test(i), "bit %d", i)
	}
}

func BenchmarkFindClearRun(b *testing.B) {
	const n = 16384
	rng := rand.New(rand.NewPCG(1, 2))
	bm := New(n)
	// 90% full, random holes: a fragmented segment.
	for i := range n {
		if rng.IntN(10) != 0 {
			bm.Set(i)
		}
	}
	for _, k := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("run=%d", k), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				bm.FindClearRun(i%n, k)
			}
		})
	}
}

func BenchmarkSetClearRange(b *testing.B) {
	bm := New(16384)
	for i := 0; b.Loop(); i++ {
		s := (i * 16) % 16384
		bm.SetRange(s, 16)
		bm.ClearRange(s, 16)
	}
}

func eq[T any](t *testing.T, want, got T, msg ...any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		if len(msg) > 0 {
			t.Fatalf("%s: got %v, want %v", fmt.Sprintf(msg[0].(string), msg[1:]...), got, want)
		}
		t.Fatalf("got %v, want %v", got, want)
	}
}

func isTrue(t *testing.T, ok bool) {
	t.Helper()
	if !ok {
		t.Fatal("want true")
	}
}

func panics(t *testing.T, want bool, fn func()) {
	t.Helper()
	got := func() (p bool) {
		defer func() { p = recover() != nil }()
		fn()
		return false
	}()
	if got != want {
		t.Fatalf("panicked=%v, want %v", got, want)
	}
}

// TestFindClearRunDensities compares FindClearRun with the model on random
// bitmaps of several densities, for run lengths around the 64-bit word size
// where the small-run and long-run searches meet.
func TestFindClearRunDensities(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 64, 127, 700} {
		for _, density := range []int{0, 10, 50, 90, 99} {
			b := New(n)
			m := make(model, n)
			for i := range n {
				if rng.IntN(100) < density {
					b.Set(i)
					m[i] = true
				}
			}
			for range 400 {
				from := rng.IntN(n+2) - 1
				k := 1 + rng.IntN(min(n, 130))
				eq(t, m.findClearRun(from, k), b.FindClearRun(from, k), "n=%d density=%d FindClearRun(%d,%d) in %v", n, density, from, k, b)
			}
		}
	}
}

// TestClearRunsDensities compares ClearRuns with the model on random
// bitmaps of several densities and lengths (whole words clear, whole words
// set, runs that cross words, a last word cut short by Len), and checks
// that stopping the iteration early yields a prefix.
func TestClearRunsDensities(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 63, 64, 65, 191, 1000} {
		for _, density := range []int{0, 1, 10, 50, 90, 99, 100} {
			for range 20 {
				b := New(n)
				m := make(model, n)
				// Runs of random length, so whole words are sometimes
				// all clear or all set.
				for i := 0; i < n; {
					l := min(n-i, 1+rng.IntN(100))
					if rng.IntN(100) < density {
						b.SetRange(i, l)
						for j := i; j < i+l; j++ {
							m[j] = true
						}
					}
					i += l
				}
				want := m.runs(false)
				eq(t, want, collectRuns(b.ClearRuns()), "n=%d density=%d in %v", n, density, b)
				if len(want) > 1 {
					var got [][2]int
					for s, l := range b.ClearRuns() {
						got = append(got, [2]int{s, l})
						if len(got) == len(want)/2 {
							break
						}
					}
					eq(t, want[:len(want)/2], got, "stopped early, n=%d in %v", n, b)
				}
			}
		}
	}
}

// BenchmarkClearRuns lists the clear runs of a 65,536-bit bitmap (a segment
// of 128-byte blocks) whose set bits form runs of 1-40 bits with gaps of
// 1-8.
func BenchmarkClearRuns(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 8))
	bm := New(1 << 16)
	for i := 0; i < bm.Len(); {
		l := min(bm.Len()-i, 1+rng.IntN(40))
		bm.SetRange(i, l)
		i += l + 1 + rng.IntN(8)
	}
	runs := 0
	for b.Loop() {
		for range bm.ClearRuns() {
			runs++
		}
	}
	b.ReportMetric(float64(runs)/float64(b.N), "runs/op")
}
