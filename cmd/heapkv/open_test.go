package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/heapkv/heapkv"
	"github.com/stretchr/testify/require"
)

const lockHint = "(is another heapkv process using it?)"

// The shell says when it creates a database, and only then.
func TestNewDatabaseMessage(t *testing.T) {
	for _, name := range []string{"missing", "empty"} {
		dir := filepath.Join(t.TempDir(), "db")
		if name == "empty" {
			require.NoError(t, os.Mkdir(dir, 0o755))
		}
		out, errs, code := cli(t, "", "-d", dir, "-c", "put k v")
		require.Equal(t, 0, code, errs)
		require.Equal(t, "OK\n", out)
		want := "created new database in " + dir + "\n"
		if name == "missing" {
			want = "created new database in " + dir + " (the directory did not exist)\n"
		}
		require.Equal(t, want, errs, name)

		out, errs, code = cli(t, "", "-d", dir, "-c", "get k")
		require.Equal(t, 0, code, errs)
		require.Equal(t, "\"v\"\n", out)
		require.Empty(t, errs, "reopening %s", name)
	}
}

// The first command of the README, with the default directory, works in a
// fresh directory and says what it made.
func TestDefaultDirFresh(t *testing.T) {
	cwd := t.TempDir()
	cmd := heapkvCmd(t, "-c", "put k v; get k")
	cmd.Dir = cwd
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	require.Equal(t, "OK\n\"v\"\n", string(out))
	require.Equal(t, "created new database in "+defaultDir+"\n", stderr.String())
	_, err = os.Stat(filepath.Join(cwd, defaultDir, "LOCK"))
	require.NoError(t, err)
}

// Open errors that are not a lock held elsewhere carry no hint about
// another process; the one that is does.
func TestOpenErrorHints(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "notes")
	require.NoError(t, os.WriteFile(file, []byte("text"), 0o644))
	_, errs, code := cli(t, "", "-d", file, "-c", "put k v")
	require.Equal(t, 1, code)
	requireOneError(t, errs, "not a directory")
	require.NotContains(t, errs, lockHint)

	missing := filepath.Join(base, "typo", "db")
	_, errs, code = cli(t, "", "-d", missing, "-c", "put k v")
	require.Equal(t, 1, code)
	requireOneError(t, errs, filepath.Join(base, "typo"))
	require.Contains(t, errs, "no such file or directory")
	require.NotContains(t, errs, lockHint)
	require.NotContains(t, errs, "created new database")
	_, err := os.Stat(filepath.Join(base, "typo"))
	require.True(t, os.IsNotExist(err), "the shell created the missing parent: %v", err)

	dir := filepath.Join(base, "db")
	db, err := heapkv.Open(dir, nil)
	require.NoError(t, err)
	defer db.Close()
	_, errs, code = cli(t, "", "-d", dir, "-c", "put k v")
	require.Equal(t, 1, code)
	requireOneError(t, errs, "database is locked")
	require.Contains(t, errs, lockHint)
}
