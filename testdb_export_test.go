package heapkv

// OpenTestDB and OpenTestDBNoCheck are openTestDB and openTestDBNoCheck
// (testdb_test.go) for heapkv_test, which calls them by those names too
// (helpers_test.go).
var (
	OpenTestDB        = openTestDB
	OpenTestDBNoCheck = openTestDBNoCheck
)

// RaceEnabled is raceEnabled (race_test.go) for heapkv_test.
const RaceEnabled = raceEnabled
