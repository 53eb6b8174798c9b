//go:build !race

package heapkv

// raceEnabled is true in builds with the race detector (see race_test.go).
const raceEnabled = false
