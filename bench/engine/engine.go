// Package engine puts the embedded stores compared by the YCSB tool behind
// one small interface.
package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
)

// ErrNotFound is returned by Read for a missing key.
var ErrNotFound = errors.New("engine: not found")

// DB is what a YCSB client drives. Implementations are safe for
// concurrent use. Writes are durable before they return when the DB was
// opened with sync true.
type DB interface {
	// Insert stores a new record.
	Insert(key, value []byte) error
	// Read returns the record's value (a copy the caller may keep).
	Read(key []byte) ([]byte, error)
	// Update overwrites an existing record.
	Update(key, value []byte) error
	// Scan reads up to n records in key order starting at start and
	// returns how many it read. Every value is read (touch), not only
	// located: bbolt's cursor, for one, returns references into its map
	// that cost nothing until they are read. Each engine reads values the
	// way that copies least: bbolt's cursor slices, Pebble's
	// Iterator.ValueAndErr, Badger's Item.Value callback, heapkv's
	// Iterator.ViewValue callback.
	Scan(start []byte, n int) (int, error)
	// Close flushes and closes the store.
	Close() error
}

// Counters is implemented by engines that can report counters of their
// own work (group commits, flushes, checkpoints). Each value is
// cumulative since the store was opened; the runner reports a phase's
// differences.
type Counters interface {
	Counters() (map[string]float64, error)
}

// Config names an engine configuration.
type Config struct {
	Name        string
	Description string
	Open        func(dir string, sync bool) (DB, error)
}

var registry = map[string]Config{}

func register(c Config) { registry[c.Name] = c }

// Names lists the registered engine configurations, sorted.
func Names() []string {
	var n []string
	for k := range registry {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Lookup returns the named configuration.
func Lookup(name string) (Config, error) {
	c, ok := registry[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown engine %q (have %s)", name, strings.Join(Names(), ", "))
	}
	return c, nil
}

// Open opens the named engine in dir.
func Open(name, dir string, sync bool) (DB, error) {
	c, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	return c.Open(dir, sync)
}

// touchSink keeps touch's reads from being optimised away. A scan adds
// its sum once, so that scanners do not share a cache line per value.
var touchSink atomic.Uint64

// touch reads every byte of a scanned value, eight at a time, as a caller
// that decodes the record would (YCSB's client decodes every field), and
// returns their sum for the scan to add to touchSink.
func touch(v []byte) uint64 {
	var s uint64
	for len(v) >= 8 {
		s += binary.LittleEndian.Uint64(v)
		v = v[8:]
	}
	for _, b := range v {
		s += uint64(b)
	}
	return s
}
