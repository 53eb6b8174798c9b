//go:build race

package heapkv_test

// txnRace is true in builds with the race detector, which makes the
// Open-heavy tests of transactions many times slower: they do less.
const txnRace = true
