package heapkv

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Compression of heap values. A heap value is stored compressed only when
// the compressed bytes need at least one heap block fewer than the value
// itself; otherwise it is stored as is and reading it costs nothing extra.
// The pointer records the codec, the value's length (rawLen) and the stored
// length (storedLen); the pointer's CRC-32C covers the stored bytes, so a
// damaged heap block is caught before any decoder sees it. Decoding is
// bounded: the output may not exceed rawLen, which decodeEntry keeps at or
// below MaxValueSize, so a corrupt pointer or stored block cannot make a
// reader allocate without limit.

// String returns the codec's name as Options.Compression documents it.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecS2:
		return "s2"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

func (c Codec) valid() bool { return c <= CodecZstd }

// ParseCodec returns the codec named s ("none", "s2" or "zstd").
func ParseCodec(s string) (Codec, error) {
	for c := CodecNone; c.valid(); c++ {
		if c.String() == s {
			return c, nil
		}
	}
	return CodecNone, fmt.Errorf("%w: unknown compression %q (want none, s2 or zstd)", ErrInvalidOptions, s)
}

// codecStats count the heap values this handle wrote.
type codecStats struct {
	values     atomic.Int64 // heap values written
	rawBytes   atomic.Int64 // their bytes before compression
	stored     atomic.Int64 // their bytes as stored
	compressed atomic.Int64 // values stored compressed
}

// maxPooledBuf is the largest compression buffer kept for reuse; bigger
// values get a buffer of their own (sync.Pool would pin it until a GC).
const maxPooledBuf = 1 << 20

var encBufPool = sync.Pool{New: func() any { return new([]byte) }}

// encoder compresses values with one codec and level. It is safe for
// concurrent use.
type encoder struct {
	codec Codec
	level int
	zstd  *zstd.Encoder // for CodecZstd; shared, EncodeAll is concurrency-safe
}

// newEncoder returns the encoder for codec at level (0 is the codec's
// default); nil for CodecNone.
func newEncoder(codec Codec, level int) (*encoder, error) {
	switch codec {
	case CodecNone:
		return nil, nil
	case CodecS2:
		return &encoder{codec: codec, level: level}, nil
	case CodecZstd:
		z, err := zstdEncoder(level)
		if err != nil {
			return nil, err
		}
		return &encoder{codec: codec, level: level, zstd: z}, nil
	}
	return nil, fmt.Errorf("%w: unknown compression %d", ErrInvalidOptions, codec)
}

// encode compresses value into a pooled buffer if that saves at least one
// block of blockSize bytes. It returns the bytes to store, their codec, and
// a function that recycles the buffer once the stored bytes are written.
func (e *encoder) encode(value []byte, blockSize int) (stored []byte, codec Codec, done func()) {
	nop := func() {}
	if e == nil {
		return value, CodecNone, nop
	}
	// The compressed bytes must fit in one block fewer than the value.
	limit := (len(value) - 1) / blockSize * blockSize
	if limit <= 0 {
		return value, CodecNone, nop
	}
	bp := encBufPool.Get().(*[]byte)
	if incompressible(value, bp) {
		encBufPool.Put(bp)
		return value, CodecNone, nop
	}
	var out []byte
	switch e.codec {
	case CodecS2:
		if n := s2.MaxEncodedLen(len(value)); cap(*bp) < n {
			*bp = make([]byte, n)
		}
		switch {
		case e.level >= 3:
			out = s2.EncodeBest(*bp, value)
		case e.level == 2:
			out = s2.EncodeBetter(*bp, value)
		default:
			out = s2.Encode(*bp, value)
		}
	case CodecZstd:
		out = e.zstd.EncodeAll(value, (*bp)[:0])
	}
	release := func() {
		if cap(out) > cap(*bp) {
			*bp = out[:0] // EncodeAll grew it
		}
		if cap(*bp) <= maxPooledBuf {
			encBufPool.Put(bp)
		}
	}
	if len(out) > limit {
		release()
		return value, CodecNone, nop
	}
	return out, e.codec, release
}

// Incompressible values are recognised from two samples before the whole
// value is compressed: s2's fastest mode on sampleBytes at the start and at
// the middle of the value. Only a value of at least minSampledValue bytes is
// sampled (the samples cost at most a quarter of compressing it with s2,
// and a tiny fraction of zstd), and it is stored as it is only when neither
// sample shrinks by 1/32: text, JSON, logs and zeros shrink far more than
// that even in 2 KiB pieces, while random or already compressed bytes grow.
// A value compressible only outside both samples is stored uncompressed: a
// loss of space, never of data.
const (
	sampleBytes     = 2 << 10
	minSampledValue = 4 * 2 * sampleBytes
)

// incompressible reports whether value is large enough to be sampled and
// both samples fail to shrink by 1/32. bp is scratch space.
func incompressible(value []byte, bp *[]byte) bool {
	if len(value) < minSampledValue {
		return false
	}
	if n := s2.MaxEncodedLen(sampleBytes); cap(*bp) < n {
		*bp = make([]byte, n)
	}
	mid := len(value)/2 - sampleBytes/2
	for _, sample := range [][]byte{value[:sampleBytes], value[mid : mid+sampleBytes]} {
		if len(s2.Encode(*bp, sample)) < sampleBytes-sampleBytes/32 {
			return false
		}
	}
	return true
}

// decodeValue returns the value that stored, written with codec, encodes.
// It never returns more than rawLen bytes, never panics on bad input, and
// reports corrupt input as an error (the caller wraps ErrCorrupt and names
// the key). For CodecNone it returns stored itself.
func decodeValue(codec Codec, rawLen uint64, stored []byte) ([]byte, error) {
	if rawLen > MaxValueSize {
		return nil, fmt.Errorf("value length %d exceeds MaxValueSize", rawLen)
	}
	switch codec {
	case CodecNone:
		if uint64(len(stored)) != rawLen {
			return nil, fmt.Errorf("stored %d bytes, want %d", len(stored), rawLen)
		}
		return stored, nil
	case CodecS2:
		n, err := s2.DecodedLen(stored)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if uint64(n) != rawLen {
			return nil, fmt.Errorf("s2: block decodes to %d bytes, want %d", n, rawLen)
		}
		out, err := s2.Decode(make([]byte, rawLen), stored)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		return out, nil
	case CodecZstd:
		d, err := zstdDecoder()
		if err != nil {
			return nil, err
		}
		// The decoder is limited to the capacity of dst (WithDecodeAllCapLimit).
		out, err := d.DecodeAll(stored, make([]byte, 0, rawLen))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if uint64(len(out)) != rawLen {
			return nil, fmt.Errorf("zstd: frame decodes to %d bytes, want %d", len(out), rawLen)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown codec %d", codec)
}

// zstd encoders and the decoder are expensive to build (each holds
// GOMAXPROCS sets of tables and history buffers), and EncodeAll and
// DecodeAll are safe for concurrent use, so the process shares one encoder
// per level and one decoder among all databases. They are never closed:
// neither starts goroutines for EncodeAll/DecodeAll.
var (
	zstdEncMu sync.Mutex
	zstdEncs  = map[zstd.EncoderLevel]*zstd.Encoder{}

	zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0), // GOMAXPROCS concurrent DecodeAll calls
			zstd.WithDecoderMaxMemory(MaxValueSize),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			return nil, fmt.Errorf("heapkv: zstd decoder: %w", err)
		}
		return d, nil
	})
)

// zstdLevel maps a zstd level (1-22; 0 means 3) onto the encoder speeds the
// Go implementation has.
func zstdLevel(level int) zstd.EncoderLevel {
	if level == 0 {
		level = 3
	}
	return zstd.EncoderLevelFromZstd(level)
}

func zstdEncoder(level int) (*zstd.Encoder, error) {
	l := zstdLevel(level)
	zstdEncMu.Lock()
	defer zstdEncMu.Unlock()
	if e := zstdEncs[l]; e != nil {
		return e, nil
	}
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(l),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		return nil, fmt.Errorf("heapkv: zstd encoder: %w", err)
	}
	zstdEncs[l] = e
	return e, nil
}
