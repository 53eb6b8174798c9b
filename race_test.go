//go:build race

package heapkv

// raceEnabled is true in builds with the race detector, under which Open,
// crash clones and child processes are many times slower: the tests that
// repeat them do fewer rounds (the runs without it keep the full counts).
const raceEnabled = true
