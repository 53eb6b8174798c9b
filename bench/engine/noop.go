package engine

import (
	"os"
	"sync/atomic"
)

// The no-op engine measures the harness's own ceiling: key generation,
// value filling, latency recording and the client goroutines, with a store
// that keeps nothing. A Read returns a fresh copy of a zeroed value as long
// as the last one written (one allocation and one copy, as the real engines'
// Reads make), so that reads cost what the harness pays for a value.
func init() {
	register(Config{"noop", "stores nothing: the harness's own ceiling (Read returns zeros as long as the last value written)", func(dir string, _ bool) (DB, error) {
		// The directory exists, as after a real engine's load, so that
		// -sequence can run later workloads on "its data".
		return &noopDB{}, os.MkdirAll(dir, 0o755)
	}})
}

type noopDB struct {
	size atomic.Int64
}

func (n *noopDB) Insert(_, v []byte) error { n.size.Store(int64(len(v))); return nil }
func (n *noopDB) Update(_, v []byte) error { n.size.Store(int64(len(v))); return nil }
func (n *noopDB) Read([]byte) ([]byte, error) {
	return make([]byte, n.size.Load()), nil
}
func (n *noopDB) Scan(_ []byte, count int) (int, error) { return count, nil }
func (n *noopDB) Close() error                          { return nil }
