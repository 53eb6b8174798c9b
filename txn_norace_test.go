//go:build !race

package heapkv_test

// txnRace is true in builds with the race detector (see txn_race_test.go).
const txnRace = false
