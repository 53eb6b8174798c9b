package heapkv_test

import "github.com/heapkv/heapkv"

// openTestDB opens a database the test expects to open, and at cleanup, if
// the test left it open, runs Check and Close, failing the test on any
// problem; openTestDBNoCheck is for a test that corrupts the database or
// makes it fail: cleanup only closes it. Both live in testdb_test.go, shared
// with the package's internal tests.
var (
	openTestDB        = heapkv.OpenTestDB
	openTestDBNoCheck = heapkv.OpenTestDBNoCheck
)
