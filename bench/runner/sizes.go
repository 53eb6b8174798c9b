package runner

import (
	"sync"
	"sync/atomic"
)

const (
	sizeChunkBits = 16 // 64Ki records (256 KiB) per chunk
	sizeChunkLen  = 1 << sizeChunkBits
)

type sizeChunk [sizeChunkLen]atomic.Int32

// RecordSizes holds the current value size of every record of a data set
// written with a variable value-size distribution (uniform, lognormal),
// indexed by key number, so that logical bytes stay exact when updates
// change sizes. 0 means unknown (the record was written by another
// process or an earlier tool run). It grows with the keyspace (inserts of
// workloads D and E) and is safe for concurrent use.
//
// Execute returns it in Result.Sizes; pass it as Config.ExistingSizes to
// the next Execute on the same data (as -sequence does).
type RecordSizes struct {
	mu  sync.Mutex                   // serialises growth
	dir atomic.Pointer[[]*sizeChunk] // copied on growth, never modified once published
}

// chunk returns the chunk holding key number k, allocating it if grow.
func (s *RecordSizes) chunk(k uint64, grow bool) *sizeChunk {
	i := k >> sizeChunkBits
	if d := s.dir.Load(); d != nil && i < uint64(len(*d)) && (*d)[i] != nil {
		return (*d)[i]
	}
	if !grow {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var old []*sizeChunk
	if d := s.dir.Load(); d != nil {
		old = *d
	}
	if i < uint64(len(old)) && old[i] != nil {
		return old[i]
	}
	d := make([]*sizeChunk, max(uint64(len(old)), i+1))
	copy(d, old)
	d[i] = new(sizeChunk)
	s.dir.Store(&d)
	return d[i]
}

// get returns record k's size (0: unknown).
func (s *RecordSizes) get(k uint64) int32 {
	if c := s.chunk(k, false); c != nil {
		return c[k&(sizeChunkLen-1)].Load()
	}
	return 0
}

// swap sets record k's size and returns the previous one (0: unknown).
func (s *RecordSizes) swap(k uint64, size int32) int32 {
	return s.chunk(k, true)[k&(sizeChunkLen-1)].Swap(size)
}

// recordLocks is the number of record lock stripes.
const (
	recordLockBits = 10
	recordLocks    = 1 << recordLockBits
)

type paddedMutex struct {
	sync.Mutex
	_ [56]byte // one per cache line
}

// lockRecord locks record k's stripe for a write, when sizes are tracked;
// it returns the mutex to unlock (nil: none). Two writes to one record
// then reach the engine in the order their sizes are recorded.
func (st *state) lockRecord(k uint64) *sync.Mutex {
	if st.locks == nil {
		return nil
	}
	mu := &st.locks[(k*0x9e3779b97f4a7c15)>>(64-recordLockBits)].Mutex
	mu.Lock()
	return mu
}

func unlock(mu *sync.Mutex) {
	if mu != nil {
		mu.Unlock()
	}
}

// updated accounts a successful update of record k (key cl.key) with a
// value of n bytes.
func (st *state) updated(cl *client, k uint64, n int) {
	cl.wbytes += int64(len(cl.key) + n)
	if st.sizes != nil {
		old := int64(st.sizes.swap(k, int32(n)))
		if old == 0 {
			old = st.assumed
		}
		st.logicalBytes.Add(int64(n) - old)
	}
}
