package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOperatorSubcommands(t *testing.T) {
	dir := t.TempDir()
	_, errs, code := cli(t, "", "-d", dir, "-c", "put k v; put h @"+writeTemp(t, 10000))
	require.Equal(t, 0, code, errs)
	// check, stats and info open the database read-only: no file changes.
	before := dirHashes(t, dir)
	defer func() { require.Equal(t, before, dirHashes(t, dir), "an inspection subcommand changed a file") }()

	out, errs, code := cli(t, "", "check", dir)
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "keys 2 (inline 1, heap 1, verified 1)")
	require.True(t, strings.HasSuffix(out, "OK\n"), out)

	out, _, code = cli(t, "", "stats", "--json", dir)
	require.Equal(t, 0, code)
	var obj map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &obj))
	require.Equal(t, 2.0, obj["stats"].(map[string]any)["keys"])

	out, _, code = cli(t, "", "-d", dir, "info")
	require.Equal(t, 0, code)
	abs, _ := filepath.Abs(dir)
	require.Contains(t, out, "dir          "+abs+"\n")
	require.Contains(t, out, "keys         2\n")

	// A missing or empty directory is an error, and is not created.
	missing := filepath.Join(t.TempDir(), "typo")
	_, errs, code = cli(t, "", "check", missing)
	require.Equal(t, 1, code)
	requireOneError(t, errs, "does not exist")
	_, err := os.Stat(missing)
	require.True(t, os.IsNotExist(err))
	_, errs, _ = cli(t, "", "info", t.TempDir())
	requireOneError(t, errs, "is empty, not a heapkv database")

	for _, args := range [][]string{{"bogus"}, {"check", "a", "b"}, {"-c", "get k", "stats", dir}, {"--nope"}} {
		_, _, code = cli(t, "", args...)
		require.Equal(t, 2, code, args)
	}
}

// dirHashes returns a hash of every file under dir by path.
func dirHashes(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = fmt.Sprintf("%x", sha256.Sum256(b))
		return err
	}))
	return out
}

// -readonly opens the shell on a database without writing to it: reads
// work, writes fail with a read-only error, and no file changes.
func TestReadOnlyShell(t *testing.T) {
	dir := t.TempDir()
	_, errs, code := cli(t, "", "-d", dir, "-c", "put k v")
	require.Equal(t, 0, code, errs)
	before := dirHashes(t, dir)
	out, errs, code := cli(t, "", "-d", dir, "-readonly", "-c", "get k")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "v")
	_, errs, code = cli(t, "", "-d", dir, "-readonly", "-c", "put k w")
	require.Equal(t, 1, code)
	requireOneError(t, errs, "read-only")
	require.Equal(t, before, dirHashes(t, dir))
}

// dump writes a database to stdout, load makes a new one from it, backup
// copies one; the source changes no file; a bad dump loads nothing.
func TestDumpLoadBackup(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src")
	_, errs, code := cli(t, "", "-d", src, "-c", "put a 1; put b @"+writeTemp(t, 5000)+"; put c 3; del c")
	require.Equal(t, 0, code, errs)
	before := dirHashes(t, src)

	dump, errs, code := cli(t, "", "dump", src)
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "dumped 2 keys")
	m := regexp.MustCompile(`as of LSN (\d+)`).FindStringSubmatch(errs)
	require.NotNil(t, m, errs)
	loaded := filepath.Join(root, "loaded")
	_, errs, code = cli(t, dump, "load", loaded)
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "loaded 2 keys")
	_, errs, code = cli(t, "", "-d", src, "backup", filepath.Join(root, "backup"))
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "backed up to")
	for _, d := range []string{loaded, filepath.Join(root, "backup")} {
		out, errs, code := cli(t, "", "-d", d, "-readonly", "-c", "get a; count")
		require.Equal(t, 0, code, errs)
		require.Contains(t, out, "1")
		require.Contains(t, out, "2")
	}
	require.Equal(t, before, dirHashes(t, src), "dump or backup changed the source")

	// A damaged dump: an error, and no directory.
	bad := filepath.Join(root, "bad")
	_, errs, code = cli(t, dump[:len(dump)/2], "load", bad)
	require.Equal(t, 1, code)
	requireOneError(t, errs, "bad format")
	_, err := os.Stat(bad)
	require.True(t, os.IsNotExist(err))
	// A full dump never loads over a database.
	_, errs, code = cli(t, dump, "load", loaded)
	require.Equal(t, 1, code)
	requireOneError(t, errs, "is not an increment")

	// Increments: dump -since the first dump's LSN, loaded into its copy;
	// backup into the earlier backup. Both end with the source's state.
	_, errs, code = cli(t, "", "-d", src, "-c", "put a 9; put d 4; del b")
	require.Equal(t, 0, code, errs)
	incr, errs, code := cli(t, "", "-since", m[1], "dump", src)
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "dumped the changes from LSN "+m[1])
	_, errs, code = cli(t, incr, "load", loaded)
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "1 deleted")
	_, errs, code = cli(t, "", "-d", src, "backup", filepath.Join(root, "backup"))
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "the changes from LSN")
	for _, d := range []string{loaded, filepath.Join(root, "backup")} {
		out, errs, code := cli(t, "", "-d", d, "-readonly", "--json", "-c", "get a; get d; exists b")
		require.Equal(t, 0, code, errs)
		require.Contains(t, out, `"9"`)
		require.Contains(t, out, `"4"`)
		require.Contains(t, out, "false")
	}
}

// compact gives the space of deleted values back: the heap file shrinks,
// what is left reads back, and stats show it.
func TestCompactSubcommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	// 12 MB of values: two segments of the default 8 MiB; the first 90%
	// of the keys deleted.
	val := strings.Repeat("v", 4000)
	var puts, dels strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&puts, "put k%04d %s\n", i, val)
		if i < 2700 {
			fmt.Fprintf(&dels, "del k%04d\n", i)
		}
	}
	_, errs, code := cli(t, puts.String()+dels.String(), "-d", dir, "-nosync")
	require.Equal(t, 0, code, errs)
	onDisk := func() int64 { return allocatedBytes(t, filepath.Join(dir, "heap")) }
	before := onDisk()

	out, errs, code := cli(t, "", "compact", dir)
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `moved \d+ values .* out of \d+ sparse segments\nheap file .* -> .*, on disk .* -> .* \(\d+ segments given back, \d+ cut off the end\)`, out)
	require.Less(t, onDisk(), before/3, "heap file on disk after compact")

	out, errs, code = cli(t, "", "-d", dir, "-c", "get --raw k2990; stats")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, val)
	require.Regexp(t, `segments +\d+ empty \(\d+ given back\), \d+ at most half live`, out)
	out, _, code = cli(t, "", "check", dir)
	require.Equal(t, 0, code, out)

	out, errs, code = cli(t, "", "-d", dir, "-c", "compact cluster; get --raw k2990")
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `rewrote 300 values \(.*\) in key order\nheap file .* -> .*`, out)
	require.Contains(t, out, val)
	out, errs, code = cli(t, "", "-d", dir, "-c", "compact cluster k2950 k2990; compact cluster k2990")
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `rewrote 40 values \(.*\) in key order\n(.|\n)*rewrote 10 values \(.*\) in key order`, out)
	_, errs, code = cli(t, "", "-d", dir, "-c", "compact cluster k2990 k2950")
	require.NotEqual(t, 0, code)
	require.Contains(t, errs, `is not below ClusterUpperBound`)
	_, errs, code = cli(t, "", "-d", dir, "-c", "compact sideways")
	require.NotEqual(t, 0, code)
	require.Contains(t, errs, `unknown argument "sideways"`)

	// The operator subcommand clusters too: all of it, a range, from the
	// first key; the flags are compact -cluster's alone.
	out, errs, code = cli(t, "", "compact", "-cluster", dir)
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `rewrote 300 values \(.*\) in key order\n`, out)
	out, errs, code = cli(t, "", "compact", "-cluster", "-from", "k2950", "-to", "k2990", dir)
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `rewrote 40 values \(.*\) in key order\n`, out)
	out, errs, code = cli(t, "", "compact", "-cluster", "-to", "k2710", dir)
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `rewrote 10 values \(.*\) in key order\n`, out)
	out, errs, code = cli(t, "", "compact", "-cluster", "-from", "k2990", dir)
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `rewrote 10 values \(.*\) in key order\n`, out)
	_, errs, code = cli(t, "", "compact", "-from", "k2950", dir)
	require.Equal(t, 2, code)
	require.Contains(t, errs, "use them with -cluster")
	_, errs, code = cli(t, "", "check", "-cluster", dir)
	require.Equal(t, 2, code)
	require.Contains(t, errs, "are for the compact subcommand, not check")
	_, errs, code = cli(t, "", "-d", dir, "-cluster")
	require.Equal(t, 2, code)
	require.Contains(t, errs, "not the shell")
	_, errs, code = cli(t, "", "load", "-cluster", filepath.Join(t.TempDir(), "new"))
	require.Equal(t, 2, code)
	require.Contains(t, errs, "not load")
	_, errs, code = cli(t, "", "compact", "-cluster", "-from", "k2990", "-to", "k2950", dir)
	require.Equal(t, 1, code)
	require.Contains(t, errs, `is not below ClusterUpperBound`)
	out, errs, code = cli(t, "", "-d", dir, "-c", "get --raw k2990")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, val)
	out, _, code = cli(t, "", "check", dir)
	require.Equal(t, 0, code, out)
}

// Every subcommand's --help prints the usage and exits 0; version prints
// one line naming the program.
func TestSubcommandHelpAndVersion(t *testing.T) {
	for _, sub := range []string{"check", "info", "stats", "scrub", "compact", "dump", "load", "backup"} {
		_, errs, code := cli(t, "", sub, "--help")
		require.Equal(t, 0, code, sub)
		require.Contains(t, errs, "usage: heapkv", sub)
	}
	out, _, code := cli(t, "", "version")
	require.Equal(t, 0, code)
	require.True(t, strings.HasPrefix(out, "heapkv ") && strings.Count(out, "\n") == 1, out)
}

// The shell's stats show the log segments prepared (zero-filled) and
// recycled since the database was opened: a new database prepares its
// first segment, and a read-only handle prepares none.
func TestStatsLogSegments(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := cli(t, "", "-d", dir, "-c", "put k v; stats")
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `(?m)^  segments +[1-9][0-9]* prepared, [0-9]+ recycled since open$`, out)

	out, _, code = cli(t, "", "stats", "--json", dir)
	require.Equal(t, 0, code)
	var obj map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &obj))
	st := obj["stats"].(map[string]any)
	require.Equal(t, 0.0, st["log_segments_prepared"], "a read-only handle prepared a segment")
	require.Contains(t, st, "log_segments_recycled")
}
