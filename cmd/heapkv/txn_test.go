package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heapkv/heapkv"
	"github.com/stretchr/testify/require"
)

func TestScanCount(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := cli(t, "", "-d", dir, "-c",
		`mput user:1 alice user:2 bob user:3 carol zz 0x00ff; scan; scan user: --limit 2; scan user: --reverse -n 1; scan --limit=1 -r; count; count user:; count nope`)
	require.Equal(t, 0, code, errs)
	require.Equal(t, "created new database in "+dir+"\n", errs)
	require.Equal(t, `OK (4 writes)
"user:1" "alice"
"user:2" "bob"
"user:3" "carol"
"zz" 0x00ff
"user:1" "alice"
"user:2" "bob"
"user:3" "carol"
"zz" 0x00ff
4
3
0
`, out)

	// A quoted word is a prefix even if it looks like an option.
	out, errs, code = cli(t, "", "-d", dir, "-c", `put -x 1; scan "-x"; ls`)
	require.Equal(t, 0, code, errs)
	require.Equal(t, "OK\n\"-x\" \"1\"\n\"-x\" \"1\"\n\"user:1\" \"alice\"\n\"user:2\" \"bob\"\n\"user:3\" \"carol\"\n\"zz\" 0x00ff\n", out)

	for _, tc := range []struct{ script, want string }{
		{"scan --limit", "scan: --limit needs a number"},
		{"scan --limit x", `scan: --limit wants a count of keys, not "x"`},
		{"scan --bogus", `scan: unknown option "--bogus"`},
		{"scan a b", "scan: more than one PREFIX"},
		{"scan @f", "@FILE is only allowed for values"},
		{"count a b", "count: too many arguments"},
	} {
		_, errs, code := cli(t, "", "-d", dir, "-c", tc.script)
		require.Equal(t, 1, code, tc.script)
		requireOneError(t, errs, tc.want)
	}

	// JSON: one object with the pairs.
	out, errs, code = cli(t, "", "-d", dir, "--json", "-c", "scan user: --limit 1; count user:")
	require.Equal(t, 0, code, errs)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	var scan struct {
		Cmd   string
		OK    bool
		Count int
		More  bool
		Pairs []map[string]any
	}
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &scan))
	require.Equal(t, "scan", scan.Cmd)
	require.True(t, scan.More)
	require.Equal(t, 1, scan.Count)
	require.Equal(t, "user:1", scan.Pairs[0]["key"])
	require.Equal(t, "alice", scan.Pairs[0]["value"])
	require.JSONEq(t, `{"cmd":"count","ok":true,"count":3}`, lines[1])
}

func TestTxnCommands(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := cli(t, "", "-d", dir, "-c",
		`put a 1; begin; put b 2; del a; get b; exists a; scan; count; commit; scan`)
	require.Equal(t, 0, code, errs)
	require.Equal(t, `OK
BEGIN (read-write)
QUEUED
QUEUED
"2"
false
"b" "2"
1
COMMIT (2 writes)
"b" "2"
`, out)

	out, errs, code = cli(t, "", "-d", dir, "-c", `begin; put c 3; mput d 4 e 5; rollback; count; exists c`)
	require.Equal(t, 0, code, errs)
	require.Equal(t, "BEGIN (read-write)\nQUEUED\nQUEUED (2 writes)\nROLLBACK (3 writes discarded)\n1\nfalse\n", out)

	// Read-only transactions refuse writes.
	_, errs, code = cli(t, "", "-d", dir, "-c", `begin ro; get b; put x 1`)
	require.Equal(t, 1, code)
	require.Contains(t, errs, "read-only")

	for _, tc := range []struct{ script, want string }{
		{"commit", "commit: no transaction is open"},
		{"rollback", "rollback: no transaction is open"},
		{"begin; begin", "begin: not allowed inside a transaction"},
		{"begin; batch", "batch: not allowed inside a transaction"},
		{"batch; begin", "begin: not allowed inside a batch"},
		{"begin maybe", `begin: want ro or rw, not "maybe"`},
	} {
		_, errs, code := cli(t, "", "-d", dir, "-c", tc.script)
		require.Equal(t, 1, code, tc.script)
		require.Contains(t, errs, "error: "+tc.want, tc.script)
		require.False(t, strings.Contains(errs, "goroutine"), errs)
	}

	// Input that ends inside a transaction rolls it back and fails.
	out, errs, code = cli(t, "begin\nput z 1\n", "-d", dir)
	require.Equal(t, 1, code)
	require.Equal(t, "BEGIN (read-write)\nQUEUED\n", out)
	requireOneError(t, errs, "input ended inside a transaction; rolled back, its 1 writes were discarded")

	// quit with an open transaction rolls it back with a warning.
	_, errs, code = cli(t, "", "-d", dir, "-c", "begin; put z 1; quit")
	require.Equal(t, 0, code)
	require.Equal(t, "warning: rolled back the open transaction; its 1 writes were discarded\n", errs)
	out, _, _ = cli(t, "", "-d", dir, "-c", "exists z")
	require.Equal(t, "false\n", out)
}

// TestTxnConflict makes another writer change a key between begin and
// commit; commit then fails with one clear line.
func TestTxnConflict(t *testing.T) {
	db, err := heapkv.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer db.Close()
	s, _, errb := newTestShell(db)
	run := func(line string) error { return runLine(t, s, line) }
	require.NoError(t, run("put k 0; begin; get k; put k 1"))
	require.NoError(t, db.Put([]byte("k"), []byte("other")))
	require.Error(t, run("commit"))
	require.Equal(t, "error: commit: conflict: another commit since begin changed a key this transaction used; its 1 writes were discarded (begin again to retry)\n", errb.String())
	require.Nil(t, s.txn)
	v, err := db.Get([]byte("k"))
	require.NoError(t, err)
	require.Equal(t, "other", string(v))
	require.Equal(t, "heapkv:db> ", s.prompt())
	require.NoError(t, run("begin"))
	require.Equal(t, "heapkv:db (txn)> ", s.prompt())
}

// TestCommandPanicIsOneLine checks that a command that panics (a bug)
// prints one error line and leaves the shell usable.
func TestCommandPanicIsOneLine(t *testing.T) {
	db, err := heapkv.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer db.Close()
	s, out, _ := newTestShell(db)
	boom := &command{name: "boom", max: -1, run: func(*shell, []word) (result, error) { panic("index out of range") }}
	_, err = s.call(boom, "boom", nil)
	require.ErrorIs(t, err, errInternal)
	require.Equal(t, "boom: internal error (a bug: please report it): index out of range", err.Error())
	require.NoError(t, runLine(t, s, "put k v; get k"))
	require.Equal(t, "OK\n\"v\"\n", out.String())
}

// newTestShell returns a shell on db (shown as "db") and the buffers it
// prints results and errors to.
func newTestShell(db *heapkv.DB) (s *shell, out, errb *bytes.Buffer) {
	out, errb = new(bytes.Buffer), new(bytes.Buffer)
	return &shell{db: db, dir: "db", out: out, errw: errb, limit: 1024}, out, errb
}

// runLine runs the statements of line in s, stopping at the first error.
func runLine(t *testing.T, s *shell, line string) error {
	t.Helper()
	stmts, err := parseLine(line)
	require.NoError(t, err)
	for _, st := range stmts {
		if err := s.exec(st, ""); err != nil {
			return err
		}
	}
	return nil
}

func TestReplicaCommands(t *testing.T) {
	dir := t.TempDir()
	mirror := filepath.Join(t.TempDir(), "m1")
	out, errs, code := cli(t, "", "-d", dir, "--mirror", mirror, "-c",
		"put a 1; put big "+strings.Repeat("x", 20000)+"; replicas; detach 1; put c 3; replicas; attach 1; replicas; scrub")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "created new database in "+dir+"\n", errs)
	lines := strings.Split(out, "\n")
	require.Regexp(t, `^ID +STATE +AVAIL +TO SYNC +COPIED`, lines[2])
	require.Regexp(t, `^0 +in-sync +yes `, lines[3])
	require.Regexp(t, `^1 +in-sync +yes .*m1/heap$`, lines[4])
	require.Equal(t, `OK (replica 1 detached; "attach 1" resyncs it)`, lines[5])
	require.Regexp(t, `^1 +stale +no .*detach`, lines[9])
	require.Regexp(t, `^OK \(replica 1 in-sync: copied \d+ blocks`, lines[10])
	require.Regexp(t, `^1 +in-sync +yes `, lines[13])
	require.Contains(t, out, "bad copies 0")

	// The mirror stays part of the database without --mirror; scrub as a
	// subcommand; errors are one line.
	out, errs, code = cli(t, "", "scrub", dir)
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "copies 2")
	for _, tc := range []struct{ script, want string }{
		{"detach 7", "detach: no replica 7 (there are 2: ids 0 to 1; see replicas)"},
		{"attach x", `attach: no replica "x"`},
		{"detach", "detach: missing ID"},
		{"detach 0; detach 1", "detach 1:"},
	} {
		_, errs, code := cli(t, "", "-d", dir, "-c", tc.script)
		require.Equal(t, 1, code, tc.script)
		requireOneError(t, errs, tc.want)
	}

	// JSON replicas.
	out, errs, code = cli(t, "", "-d", dir, "--json", "-c", "attach 0; replicas")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, `"replicas":[{`)
}

func TestStatsTable(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := cli(t, "", "-d", dir, "-c", "put a 1; begin; put b 2; commit; get a; get a; stats")
	require.Equal(t, 0, code, errs)
	// The put stored a's entry in the entry cache (write-through), so
	// both gets hit.
	for _, want := range []string{"\ndata\n", "\n  keys                 2\n", "\ntransactions and readers\n",
		"\n  txn commits          1\n", "\nindex caches\n", "\n  entry hits / misses  2 / ",
		"\nvalue cache\n", "\nreplicas\n", "\n  in sync              1 of 1\n"} {
		require.Contains(t, out, want)
	}
	// The key filter answers writes' lookups of new keys only once the
	// scan the first write starts in the background is done, so how many
	// of the two puts' lookups were skipped depends on timing: 0, 1 or 2
	// (the scan of an empty index can end before put a looks up, on
	// another processor, when put a's goroutine is held up).
	require.Regexp(t, `\n  lookups skipped      [012] \(key filter\)\n`, out)
	for _, l := range strings.Split(out, "\n") {
		require.Equal(t, strings.TrimRight(l, " "), l, "trailing blanks")
	}
}

func TestBar(t *testing.T) {
	require.Equal(t, "[============>           ]  50% ETA 2s", bar(50, 100, 2e9))
	require.Equal(t, "3s elapsed", bar(5, 0, 3e9))
	require.Equal(t, "[========================] 100% ETA 0s", bar(100, 100, 1e9))
}

// TestCorruptDatabase damages a heap file's header: every way in reports
// one clear line and exits 1, and nothing is overwritten.
func TestCorruptDatabase(t *testing.T) {
	dir := t.TempDir()
	_, errs, code := cli(t, "", "-d", dir, "-c", "put a 1")
	require.Equal(t, 0, code, errs)
	f, err := os.OpenFile(filepath.Join(dir, "heap"), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("garbage!"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	for _, args := range [][]string{{"-d", dir, "-c", "count"}, {"check", dir}, {"scrub", dir}, {"-d", dir, "-c", "scan"}} {
		out, errs, code := cli(t, "", args...)
		require.Equal(t, 1, code, args)
		require.Empty(t, out, args)
		requireOneError(t, errs, "corrupt")
	}
	b, err := os.ReadFile(filepath.Join(dir, "heap"))
	require.NoError(t, err)
	require.Equal(t, "garbage!", string(b[:8]))
}

// TestCheckpointInfo runs checkpoint and checks that info reports it, with
// the format and geometry.
func TestCheckpointInfo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	out, errs, code := cli(t, "", "-d", dir, "-c", "put a 1; put b 2; info; checkpoint; info")
	require.Equal(t, 0, code, errs)
	before, after, ok := strings.Cut(out, "OK\nOK\ndir")
	require.True(t, ok, out)
	require.Empty(t, before)
	first, second, ok := strings.Cut(after, "\nOK\n")
	require.True(t, ok, "checkpoint prints OK between the two infos: %q", out)
	require.Contains(t, first, "lsn          2 (checkpoint 0)")
	require.Contains(t, second, "lsn          2 (checkpoint 2)")
	require.Contains(t, second, "format       v1, 128 B blocks, 8.0 MiB segments")
}
