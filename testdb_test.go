package heapkv

import (
	"context"
	"errors"
	"testing"
)

// The one way tests open a database they expect to open (as bbolt's
// internal/btesting does): openTestDB fails the test if Open fails, and at
// cleanup, if the test left the database open, proves it consistent with
// Check and closes it, failing the test on any problem. A database the
// test closed itself is left alone. heapkv_test uses the same two functions
// through OpenTestDB and OpenTestDBNoCheck (testdb_export_test.go).

// openTestDB opens dir for t; see above.
func openTestDB(t testing.TB, dir string, opts *Options) *DB {
	t.Helper()
	return openForTest(t, dir, opts, true)
}

// openTestDBNoCheck is openTestDB for a test that corrupts the database or
// makes it fail on purpose: cleanup closes it if still open, without Check,
// and only logs a Close error.
func openTestDBNoCheck(t testing.TB, dir string, opts *Options) *DB {
	t.Helper()
	return openForTest(t, dir, opts, false)
}

func openForTest(t testing.TB, dir string, opts *Options, check bool) *DB {
	t.Helper()
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if !check {
			if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
				t.Logf("cleanup: close %s (Check skipped: the test damages it): %v", dir, err)
			}
			return
		}
		rep, err := db.Check(context.Background())
		if errors.Is(err, ErrClosed) {
			return // the test closed it
		}
		if err != nil || !rep.OK() {
			t.Errorf("cleanup: check %s: %v\n%v", dir, err, rep)
		}
		if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("cleanup: close %s: %v", dir, err)
		}
	})
	return db
}
