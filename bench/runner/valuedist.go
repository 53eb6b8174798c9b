package runner

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Value-size distribution kinds (the part of Config.ValueDist before ':').
const (
	ValueDistFixed     = "fixed"     // FieldCount x FieldLength bytes, no framing
	ValueDistUniform   = "uniform"   // uniform:MIN-MAX bytes, inclusive
	ValueDistLognormal = "lognormal" // lognormal:MEDIAN,SIGMA, clamped to [1, LognormalMaxSize]
	ValueDistYCSB      = "ycsb"      // FieldCount named fields of FieldLength bytes, length-prefixed
)

// MaxDrawnValueSize bounds uniform's MAX: heapkv's MaxValueSize (64 MiB).
// Every client holds a buffer of the largest size.
const MaxDrawnValueSize = 64 << 20

// LognormalMaxSize is the largest size a lognormal distribution draws
// (1 MiB); larger draws are clamped to it, as smaller than 1 B to 1.
const LognormalMaxSize = 1 << 20

// maxSigma bounds lognormal's SIGMA, which keeps Mean's exp(sigma^2/2)
// far from overflow (sigma 10 already spreads sizes over e^10 per sigma).
const maxSigma = 10

// ValueDist is a parsed value-size distribution (Config.ValueDist), bound
// to the record shape FieldCount x FieldLength that "fixed" and "ycsb"
// use. It is immutable and safe for concurrent use; Draw uses the
// caller's generator.
type ValueDist struct {
	kind          string
	min, max      int     // uniform bounds; fixed and ycsb: the size
	median, sigma float64 // lognormal
	fieldLength   int     // ycsb
	names         [][]byte
}

// ParseValueDist parses spec (fixed, uniform:MIN-MAX,
// lognormal:MEDIAN,SIGMA or ycsb; "" is fixed) for records of fieldCount
// x fieldLength bytes. The error quotes spec and says what is wrong.
func ParseValueDist(spec string, fieldCount, fieldLength int) (*ValueDist, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("bad value-size distribution %q (want fixed, uniform:MIN-MAX, lognormal:MEDIAN,SIGMA or ycsb): "+format,
			append([]any{spec}, a...)...)
	}
	kind, args, hasArgs := strings.Cut(strings.TrimSpace(spec), ":")
	kind = strings.ToLower(strings.TrimSpace(kind))
	if kind == "" && !hasArgs {
		kind = ValueDistFixed
	}
	d := &ValueDist{kind: kind}
	switch kind {
	case ValueDistFixed, ValueDistYCSB:
		if hasArgs {
			return nil, bad("%s takes no parameters (it uses -fieldcount and -fieldlength)", kind)
		}
		if fieldCount < 1 || fieldLength < 1 {
			return nil, bad("field count %d and length %d must be positive", fieldCount, fieldLength)
		}
		size := fieldCount * fieldLength
		if kind == ValueDistYCSB {
			d.fieldLength = fieldLength
			d.names = make([][]byte, fieldCount)
			size = 0
			for i := range d.names {
				d.names[i] = strconv.AppendInt([]byte("field"), int64(i), 10)
				size += 4 + len(d.names[i]) + 4 + fieldLength
			}
		}
		d.min, d.max = size, size
	case ValueDistUniform:
		lo, hi, ok := strings.Cut(args, "-")
		if !ok {
			return nil, bad("uniform needs MIN-MAX, e.g. uniform:100-65536")
		}
		var err error
		if d.min, err = strconv.Atoi(strings.TrimSpace(lo)); err != nil {
			return nil, bad("MIN: %w", err)
		}
		if d.max, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
			return nil, bad("MAX: %w", err)
		}
		if d.min < 1 || d.min > d.max || d.max > MaxDrawnValueSize {
			return nil, bad("need 1 <= MIN <= MAX <= %d, have MIN %d MAX %d", MaxDrawnValueSize, d.min, d.max)
		}
	case ValueDistLognormal:
		m, s, ok := strings.Cut(args, ",")
		if !ok {
			return nil, bad("lognormal needs MEDIAN,SIGMA, e.g. lognormal:2048,0.5")
		}
		median, err := strconv.Atoi(strings.TrimSpace(m))
		if err != nil {
			return nil, bad("MEDIAN: %w", err)
		}
		if median < 1 || median > LognormalMaxSize {
			return nil, bad("MEDIAN %d not in [1, %d] bytes", median, LognormalMaxSize)
		}
		if d.sigma, err = strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
			return nil, bad("SIGMA: %w", err)
		}
		if !(d.sigma >= 0 && d.sigma <= maxSigma) { // also rejects NaN
			return nil, bad("SIGMA %v not in [0, %d]", d.sigma, maxSigma)
		}
		d.median = float64(median)
		d.min, d.max = 1, LognormalMaxSize
	default:
		return nil, bad("unknown kind %q", kind)
	}
	return d, nil
}

// String is the canonical spec, as recorded in results.
func (d *ValueDist) String() string {
	switch d.kind {
	case ValueDistUniform:
		return fmt.Sprintf("uniform:%d-%d", d.min, d.max)
	case ValueDistLognormal:
		return fmt.Sprintf("lognormal:%d,%s", int(d.median), strconv.FormatFloat(d.sigma, 'g', -1, 64))
	}
	return d.kind
}

// Constant reports whether every value has the same size (fixed, ycsb).
func (d *ValueDist) Constant() bool { return d.kind == ValueDistFixed || d.kind == ValueDistYCSB }

// Max is the largest size Draw returns.
func (d *ValueDist) Max() int { return d.max }

// Mean is the expected value size in bytes: exact for fixed, ycsb and
// uniform; for lognormal the mean of the clamped distribution (rounding
// to whole bytes ignored).
func (d *ValueDist) Mean() float64 {
	if d.kind != ValueDistLognormal {
		return float64(d.min+d.max) / 2
	}
	lo, hi := 1.0, float64(LognormalMaxSize)
	if d.sigma == 0 {
		return math.Min(math.Max(d.median, lo), hi)
	}
	// X = exp(mu + sigma Z): E[clamp(X, lo, hi)] = lo P(X<lo) + hi P(X>hi)
	// + E[X; lo<=X<=hi], the last being exp(mu+sigma^2/2) times
	// Phi((ln hi-mu-sigma^2)/sigma) - Phi((ln lo-mu-sigma^2)/sigma).
	mu, s := math.Log(d.median), d.sigma
	phi := func(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
	a, b := (math.Log(lo)-mu)/s, (math.Log(hi)-mu)/s
	return lo*phi(a) + hi*(1-phi(b)) + math.Exp(mu+s*s/2)*(phi(b-s)-phi(a-s))
}

// Draw returns the size of the next value. Constant distributions do not
// use r, so that "fixed" draws the same random numbers as before sizes
// could vary.
func (d *ValueDist) Draw(r *rand.Rand) int {
	switch d.kind {
	case ValueDistUniform:
		return d.min + r.IntN(d.max-d.min+1)
	case ValueDistLognormal:
		x := math.Round(d.median * math.Exp(d.sigma*r.NormFloat64()))
		return int(math.Min(math.Max(x, 1), LognormalMaxSize))
	}
	return d.min
}

// frame writes the ycsb record framing into b (of size Max, its field
// values already filled): per field, u32 LE name length, the name
// "field<i>", u32 LE value length, then the value bytes left as they
// are. It does nothing for the other kinds.
func (d *ValueDist) frame(b []byte) {
	if d.kind != ValueDistYCSB {
		return
	}
	off := 0
	for _, name := range d.names {
		binary.LittleEndian.PutUint32(b[off:], uint32(len(name)))
		off += 4 + copy(b[off+4:], name)
		binary.LittleEndian.PutUint32(b[off:], uint32(d.fieldLength))
		off += 4 + d.fieldLength
	}
}
