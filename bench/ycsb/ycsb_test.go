package ycsb

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

func rng() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

// topShare is the theoretical share of requests to the k most popular of
// n items under zipf(theta): zeta(k)/zeta(n).
func topShare(k, n uint64, theta float64) float64 { return Zeta(k, theta) / Zeta(n, theta) }

func TestZipfianTopShares(t *testing.T) {
	const n, draws = 100_000, 1_000_000
	z := NewZipfian(n, ZipfianConstant)
	r := rng()
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		v := z.Next(r)
		if v >= n {
			t.Fatalf("draw %d out of range", v)
		}
		counts[v]++
	}
	// Item ranks: Gray's generator is exact for items 0 and 1 and
	// approximate beyond, so compare shares of the top 1% and 10% (YCSB's
	// reference behaviour) and the single hottest item.
	for _, frac := range []float64{0.01, 0.10} {
		k := uint64(frac * n)
		got := 0
		for i := uint64(0); i < k; i++ {
			got += counts[i]
		}
		share := float64(got) / draws
		want := topShare(k, n, ZipfianConstant)
		if math.Abs(share-want) > 0.02 {
			t.Errorf("top %.0f%%: share %.4f, theory %.4f", frac*100, share, want)
		}
		t.Logf("top %.0f%% of %d keys: share %.4f (theory %.4f)", frac*100, n, share, want)
	}
	p0 := float64(counts[0]) / draws
	if math.Abs(p0-z.Prob(0)) > 0.005 {
		t.Errorf("hottest item: %.4f, theory %.4f", p0, z.Prob(0))
	}
	// Popularity must decrease with rank (coarsely: decile counts).
	prev := math.MaxInt
	for d := 0; d < 10; d++ {
		s := 0
		for i := d * n / 10; i < (d+1)*n/10; i++ {
			s += counts[i]
		}
		if s > prev {
			t.Errorf("decile %d has more draws (%d) than decile %d (%d)", d, s, d-1, prev)
		}
		prev = s
	}
}

func TestZipfianGrowMatchesFresh(t *testing.T) {
	z := NewZipfian(1000, ZipfianConstant)
	z.Grow(5000)
	f := NewZipfian(5000, ZipfianConstant)
	if math.Abs(z.zetan-f.zetan) > 1e-9 || math.Abs(z.eta-f.eta) > 1e-9 {
		t.Fatalf("grown zeta %v eta %v, fresh %v %v", z.zetan, z.eta, f.zetan, f.eta)
	}
}

func TestPermutationIsBijection(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 7, 10, 100, 1000, 4096, 12345} {
		p := NewPermutation(n)
		seen := make([]bool, n)
		fixed := 0
		for x := uint64(0); x < n; x++ {
			y := p.Map(x)
			if y >= n {
				t.Fatalf("n=%d: Map(%d)=%d out of range", n, x, y)
			}
			if seen[y] {
				t.Fatalf("n=%d: Map not injective at %d", n, y)
			}
			seen[y] = true
			if y == x {
				fixed++
			}
		}
		if n >= 1000 && fixed > int(n/50) {
			t.Errorf("n=%d: %d fixed points: not scrambling", n, fixed)
		}
	}
}

func TestScrambledZipfianSpreadsHotKeys(t *testing.T) {
	const n, draws = 10_000, 500_000
	s := NewScrambledZipfian(n, ZipfianConstant)
	r := rng()
	counts := make([]int, n)
	for i := 0; i < draws; i++ {
		counts[s.Next(r)]++
	}
	// Same popularity profile as the unscrambled law...
	sorted := append([]int(nil), counts...)
	sort.Sort(sort.Reverse(sort.IntSlice(sorted)))
	top := 0
	for _, c := range sorted[:n/10] {
		top += c
	}
	if want := topShare(n/10, n, ZipfianConstant); math.Abs(float64(top)/draws-want) > 0.02 {
		t.Errorf("scrambled top 10%%: %.4f, theory %.4f", float64(top)/draws, want)
	}
	// ...but the hot keys are not the low key numbers.
	low := 0
	for _, c := range counts[:n/10] {
		low += c
	}
	if float64(low)/draws > 0.3 {
		t.Errorf("lowest 10%% of key numbers get %.2f of requests: not scrambled", float64(low)/draws)
	}
}

func TestKeyNames(t *testing.T) {
	if got := string(KeyName(0)); got != "user"+"6284781860667377211" {
		// fnv1a64 of eight zero bytes is 0xa8c7f832281a39c5; Math.abs of it as int64.
		t.Errorf("KeyName(0) = %s", got)
	}
	seen := map[string]bool{}
	for i := uint64(0); i < 200_000; i++ {
		k := string(KeyName(i))
		if seen[k] {
			t.Fatalf("duplicate key name %s", k)
		}
		seen[k] = true
	}
}

func TestWorkloadMixes(t *testing.T) {
	const draws = 200_000
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		w, err := Standard(name)
		if err != nil {
			t.Fatal(err)
		}
		c := NewOpChooser(w.Proportions)
		r := rng()
		var got [NumOps]int
		for i := 0; i < draws; i++ {
			got[c.Next(r)]++
		}
		for op := Op(0); op < NumOps; op++ {
			share := float64(got[op]) / draws
			if math.Abs(share-w.Proportions[op]) > 0.005 {
				t.Errorf("workload %s: %v share %.4f, want %.2f", name, op, share, w.Proportions[op])
			}
		}
	}
	if _, err := Standard("g"); err == nil {
		t.Error("workload g accepted")
	}
}

func TestParseMix(t *testing.T) {
	p, err := ParseMix("read=3,update=1")
	if err != nil || p[OpRead] != 0.75 || p[OpUpdate] != 0.25 {
		t.Fatalf("ParseMix: %v %v", p, err)
	}
	for _, bad := range []string{"", "read", "read=x", "foo=1", "read=-1"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

func TestLatestFavoursRecentInserts(t *testing.T) {
	const n = 10_000
	ks := NewKeyspace(n)
	c, err := NewKeyChooser(DistLatest, ks, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := rng()
	count := func() (newest, recent int) {
		lim := ks.Limit()
		for i := 0; i < 100_000; i++ {
			k := c.Next(r)
			if k >= lim {
				t.Fatalf("latest drew %d, only %d keys exist", k, lim)
			}
			if k == lim-1 {
				newest++
			}
			if k >= lim-lim/100 {
				recent++
			}
		}
		return
	}
	newest, recent := count()
	// The newest key has the zipfian rank-0 probability; the newest 1%
	// have the top-1% share.
	z := NewZipfian(n, ZipfianConstant)
	if s := float64(newest) / 1e5; math.Abs(s-z.Prob(0)) > 0.01 {
		t.Errorf("newest key share %.4f, want %.4f", s, z.Prob(0))
	}
	if s, want := float64(recent)/1e5, topShare(n/100, n, ZipfianConstant); math.Abs(s-want) > 0.02 {
		t.Errorf("newest 1%% share %.4f, want %.4f", s, want)
	}
	// After inserts, the new keys become the hot ones.
	for i := 0; i < 100; i++ {
		ks.Ack(ks.NextInsert())
	}
	hot := 0
	for i := 0; i < 100_000; i++ {
		if c.Next(r) >= n {
			hot++
		}
	}
	if s, want := float64(hot)/1e5, topShare(100, n+100, ZipfianConstant); math.Abs(s-want) > 0.02 {
		t.Errorf("share of the 100 new keys %.4f, want %.4f", s, want)
	}
}

func TestKeyspaceAckOutOfOrder(t *testing.T) {
	ks := NewKeyspace(5)
	a, b, c := ks.NextInsert(), ks.NextInsert(), ks.NextInsert()
	ks.Ack(c)
	ks.Ack(b)
	if ks.Limit() != 5 {
		t.Fatalf("limit %d before the first insert is acked", ks.Limit())
	}
	ks.Ack(a)
	if ks.Limit() != 8 {
		t.Fatalf("limit %d, want 8", ks.Limit())
	}
}

func TestZipfianChooserOnlyExistingKeys(t *testing.T) {
	ks := NewKeyspace(1000)
	c, err := NewKeyChooser(DistZipfian, ks, 500)
	if err != nil {
		t.Fatal(err)
	}
	r := rng()
	for i := 0; i < 100_000; i++ {
		if k := c.Next(r); k >= 1000 {
			t.Fatalf("drew %d, only 1000 keys", k)
		}
	}
}
