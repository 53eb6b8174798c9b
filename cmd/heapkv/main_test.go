package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heapkv/heapkv"
	"github.com/stretchr/testify/require"
)

// TestMain lets the tests run the test binary itself as the heapkv command
// (see heapkvCmd), so the process tests need no separate build.
func TestMain(m *testing.M) {
	if os.Getenv("HEAPKV_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// cli runs the program in-process with stdin as input.
func cli(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// heapkvCmd returns the program as a separate process.
func heapkvCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "HEAPKV_TEST_MAIN=1")
	return cmd
}

// requireOneError checks that stderr is exactly one "error:" line
// containing want (after the note of a database the run created), so no
// stack trace or log noise slipped out.
func requireOneError(t *testing.T, stderr, want string) {
	t.Helper()
	if note, rest, ok := strings.Cut(stderr, "\n"); ok && strings.HasPrefix(note, "created new database in ") {
		stderr = rest
	}
	require.Truef(t, strings.HasPrefix(stderr, "error: "), "stderr %q", stderr)
	require.Equal(t, 1, strings.Count(stderr, "\n"), "stderr %q", stderr)
	require.Contains(t, stderr, want)
}

func TestPutGetRoundTrip(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := cli(t, "", "-d", dir, "-c",
		`put greeting "hello, world\n"; GET greeting; put sp 'a b'; get sp; exists sp; exists nope`)
	require.Equal(t, 0, code, errs)
	require.Equal(t, "created new database in "+dir+"\n", errs)
	require.Equal(t, "OK\n\"hello, world\\n\"\nOK\n\"a b\"\ntrue\nfalse\n", out)

	// A second run (a reopen) sees the writes; del removes one.
	out, errs, code = cli(t, "", "-d", dir, "-c", "get greeting; del greeting; exists greeting; del greeting")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "\"hello, world\\n\"\nOK\nfalse\nOK\n", out)
}

func TestBinaryValues(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "v.bin")
	big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 2000) // 8000 bytes: a heap value
	require.NoError(t, os.WriteFile(file, big, 0o644))

	out, errs, code := cli(t, "", "-d", dir, "-c",
		`put b 0x00ff10; get b; put e ""; get e; put 0x6b31 "\x00\x01"; get k1; put f @`+file+`; get f; check`)
	require.Equal(t, 0, code, errs)
	lines := strings.Split(out, "\n")
	require.Equal(t, []string{"OK", "0x00ff10", "OK", `""`, "OK", "0x0001", "OK"}, lines[:7])
	require.Equal(t, "0x"+strings.Repeat("000102ff", 256)+"... (1024 of 8000 bytes shown)", lines[7])
	require.Contains(t, out, "OK\n") // check passed

	// --limit 0 shows everything; the output pastes back as the same value.
	out, _, code = cli(t, "", "-d", dir, "--limit", "0", "-c", "get f")
	require.Equal(t, 0, code)
	val := strings.TrimSpace(out)
	out, errs, code = cli(t, "", "-d", dir, "-c", "put g "+val+"; get b; exists g")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "OK\n0x00ff10\ntrue\n", out)
	db, err := heapkv.Open(dir, nil)
	require.NoError(t, err)
	got, err := db.Get([]byte("g"))
	require.NoError(t, err)
	require.Equal(t, big, got)
	require.NoError(t, db.Close())
}

func TestQuotingErrors(t *testing.T) {
	for _, tc := range []struct{ script, want string }{
		{`put k "abc`, "column 21: unterminated double-quoted string"}, // after "put before 1; "
		{`put k 'abc`, "unterminated single-quoted string"},
		{`put k "\q"`, "invalid escape"},
		{`put k "a"b`, "after closing quote"},
		{`put k it's`, "quote inside a word"},
		{`put k 0xabc`, "invalid hex"},
	} {
		dir := t.TempDir()
		// Nothing in a script that does not parse runs, not even the
		// statement before the bad one.
		out, errs, code := cli(t, "", "-d", dir, "-c", "put before 1; "+tc.script)
		require.Equal(t, 1, code, tc.script)
		require.Empty(t, out)
		requireOneError(t, errs, tc.want)
		out, _, _ = cli(t, "", "-d", dir, "-c", "exists before")
		require.Equal(t, "false\n", out)
	}
}

func TestUnknownCommand(t *testing.T) {
	dir := t.TempDir()
	_, errs, code := cli(t, "", "-d", dir, "-c", "gte k")
	require.Equal(t, 1, code)
	requireOneError(t, errs, `unknown command "gte" (did you mean "get"?)`)

	_, errs, _ = cli(t, "", "-d", dir, "-c", "chekpoint")
	requireOneError(t, errs, `did you mean "checkpoint"?`)
	_, errs, _ = cli(t, "", "-d", dir, "-c", "xyzzy")
	requireOneError(t, errs, `unknown command "xyzzy"; type "help" for the list`)
}

func TestArgumentCounts(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ script, want string }{
		{"get", "get: missing KEY (usage: get KEY)"},
		{"put k", "put: missing VALUE (usage: put KEY VALUE)"},
		{"put", "put: missing KEY"},
		{"get a b", "usage: get [--raw | -o FILE] KEY"},
		{"mput a 1 b", `mput: KEY "b" has no VALUE`},
		{"stats now", "stats: too many arguments"},
		{`put "" v`, "empty key"},
		{"get @f", "@FILE is only allowed for values"},
		{"put k @" + filepath.Join(dir, "missing"), "no such file"},
	} {
		out, errs, code := cli(t, "", "-d", dir, "-c", tc.script+"; put after 1")
		require.Equal(t, 1, code, tc.script)
		require.Empty(t, out, tc.script) // the first error stops the script
		requireOneError(t, errs, tc.want)
	}
	out, _, _ := cli(t, "", "-d", dir, "-c", "exists after")
	require.Equal(t, "false\n", out)
}

func TestGetMissingKey(t *testing.T) {
	_, errs, code := cli(t, "", "-d", t.TempDir(), "-c", "get nope")
	require.Equal(t, 1, code)
	requireOneError(t, errs, `not found: "nope"`)
}

func TestBatch(t *testing.T) {
	dir := t.TempDir()
	in := "put a 0\nbatch\nput a 1\nput b 2\ndel a\nend\nexists a\nget b\nbatch\nput c 3\nabort\nexists c\n"
	out, errs, code := cli(t, in, "-d", dir)
	require.Equal(t, 0, code, errs)
	require.Equal(t, "OK\nOK (3 writes)\nfalse\n\"2\"\ndiscarded 1 writes\nfalse\n", out)

	out, errs, code = cli(t, "", "-d", dir, "-c", "mput x 1 y 0x02; get y")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "OK (2 writes)\n0x02\n", out)

	// Only put, del, end, abort and help run inside a batch.
	_, errs, code = cli(t, "", "-d", dir, "-c", "batch; put z 1; get z; end")
	require.Equal(t, 1, code)
	requireOneError(t, errs, "get: not allowed inside a batch")

	// An input that ends inside a batch applies none of it.
	_, errs, code = cli(t, "batch\nput z 1\n", "-d", dir)
	require.Equal(t, 1, code)
	requireOneError(t, errs, "input ended inside a batch; its 1 writes were discarded")

	// An invalid write fails the whole batch at end.
	_, errs, code = cli(t, "", "-d", dir, "-c", `batch; put z 1; put "" 2; end`)
	require.Equal(t, 1, code)
	requireOneError(t, errs, "batch discarded: batch op 1: empty key")
	_, errs, _ = cli(t, "", "-d", dir, "-c", "end")
	requireOneError(t, errs, "end: no batch is open")

	out, _, _ = cli(t, "", "-d", dir, "-c", "exists z")
	require.Equal(t, "false\n", out)
}

func TestPipedStdin(t *testing.T) {
	dir := t.TempDir()
	in := "put k v # set it\n\n  get k ; exists k\r\nbogus\nput after 1\n"
	out, errs, code := cli(t, in, "-d", dir)
	require.Equal(t, 1, code)
	require.Equal(t, "OK\n\"v\"\ntrue\n", out) // no prompt, nothing after the error
	requireOneError(t, errs, `line 4: unknown command "bogus"`)

	out, _, code = cli(t, "exists after\nquit\nbogus\n", "-d", dir)
	require.Equal(t, 0, code) // quit stops before bogus
	require.Equal(t, "false\n", out)

	_, errs, code = cli(t, "get k\nput x 'unterminated\n", "-d", dir)
	require.Equal(t, 1, code)
	requireOneError(t, errs, "line 2: column 7: unterminated single-quoted string")
}

func TestLockedDatabase(t *testing.T) {
	dir := t.TempDir()
	db, err := heapkv.Open(dir, nil)
	require.NoError(t, err)
	defer db.Close()

	out, errs, code := cli(t, "", "-d", dir, "-c", "put k v")
	require.Equal(t, 1, code)
	require.Empty(t, out)
	requireOneError(t, errs, "locked")

	// Another process gets the same clear error.
	cmd := heapkvCmd(t, "-d", dir, "-c", "put k v")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	require.Error(t, err)
	require.Equal(t, 1, cmd.ProcessState.ExitCode())
	requireOneError(t, stderr.String(), "database is locked")

	_, errs, code = cli(t, "", "check", dir)
	require.Equal(t, 1, code)
	requireOneError(t, errs, "locked")
}

func TestJSONOutput(t *testing.T) {
	dir := t.TempDir()
	script := `put t "héllo"; put b 0x00ff; get t; get b; exists b; mput x 1 y 2; stats; info; check; help get; get nope`
	out, _, code := cli(t, "", "-d", dir, "--json", "-c", script)
	require.Equal(t, 1, code) // get nope fails
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 11) // one object per statement
	objs := make([]map[string]any, len(lines))
	for i, l := range lines {
		require.NoError(t, json.Unmarshal([]byte(l), &objs[i]), l)
	}
	require.Equal(t, map[string]any{"cmd": "put", "ok": true}, objs[0])
	require.Equal(t, map[string]any{"cmd": "get", "ok": true, "key": "t", "value": "héllo", "size": 6.0}, objs[2])
	require.Equal(t, "00ff", objs[3]["value_hex"])
	require.Equal(t, true, objs[4]["exists"])
	require.Equal(t, 2.0, objs[5]["writes"])
	require.Equal(t, 4.0, objs[6]["stats"].(map[string]any)["keys"])
	require.Equal(t, 4.0, objs[7]["keys"])
	require.Equal(t, 4.0, objs[8]["report"].(map[string]any)["keys"])
	require.Contains(t, objs[9]["text"], "usage: get KEY")
	require.Equal(t, map[string]any{"cmd": "get", "ok": false, "error": `not found: "nope"`, "code": "not_found"}, objs[10])
	// One key style: every key of every object, nested ones too, is
	// snake_case.
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				require.Regexp(t, `^[a-z][a-z0-9_]*$`, k)
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	for _, o := range objs {
		walk(o)
	}

	// Syntax errors and unknown commands are JSON too.
	out, _, code = cli(t, "", "-d", dir, "--json", "-c", "put 'x")
	require.Equal(t, 1, code)
	var obj map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &obj))
	require.Equal(t, false, obj["ok"])
	require.Equal(t, "syntax", obj["code"])
	out, _, _ = cli(t, "", "-d", dir, "--json", "-c", "gte")
	require.NoError(t, json.Unmarshal([]byte(out), &obj))
	require.Equal(t, "gte", obj["cmd"])
	require.Equal(t, "unknown_command", obj["code"])
	out, _, _ = cli(t, "", "-d", dir, "--json", "-c", "get")
	require.NoError(t, json.Unmarshal([]byte(out), &obj))
	require.Equal(t, "usage", obj["code"])
}

func writeTemp(t *testing.T, n int) string {
	p := filepath.Join(t.TempDir(), "value")
	require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte("0123456789"), n/10), 0o644))
	return p
}

// TestProcess runs the program as its own process, with -c and with
// commands piped on a real stdin pipe.
func TestProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := heapkvCmd(t, "-d", dir, "--nosync", "-c", "put k 0x0102; sync; get k")
	out, err := cmd.Output()
	require.NoError(t, err)
	require.Equal(t, "OK\nOK\n0x0102\n", string(out))

	cmd = heapkvCmd(t, "-d", dir)
	cmd.Stdin = strings.NewReader("get k\nput s 'x y'\nget s\nnope\nget s\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	require.Error(t, err)
	require.Equal(t, 1, cmd.ProcessState.ExitCode())
	require.Equal(t, "0x0102\nOK\n\"x y\"\n", string(out))
	requireOneError(t, stderr.String(), `line 4: unknown command "nope"`)
}

func TestHelp(t *testing.T) {
	out, _, code := cli(t, "", "-d", t.TempDir(), "-c", "help; help del; help delete")
	require.Equal(t, 0, code)
	for _, c := range commands {
		require.Contains(t, out, "  "+c.usage())
	}
	require.Contains(t, out, "usage: del KEY\n")
	require.Contains(t, out, "aliases: delete")
	_, errs, _ := cli(t, "", "-d", t.TempDir(), "-c", "help gte")
	requireOneError(t, errs, `did you mean "get"?`)
}

func TestComplete(t *testing.T) {
	require.Equal(t, []string{"checkpoint", "check"}, complete("che"))
	require.Equal(t, []string{"del", "delete", "detach"}, complete("de"))
	require.Equal(t, []string{"scan"}, complete("sca"))
	require.Equal(t, []string{"help mput"}, complete("help mp"))
	require.Equal(t, []string{"put a 1; get"}, complete("put a 1; g"))
	require.Nil(t, complete("get k"))
	require.Len(t, complete(""), len(byName))
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int
		want  string
	}{
		{"", 0, `""`},
		{"hello", 0, `"hello"`},
		{"tab\there\n", 0, `"tab\there\n"`},
		{"héllo 😀", 0, `"héllo 😀"`},
		{"\x00\x01", 0, "0x0001"},
		{"\xff", 0, "0xff"},
		{"ab\x7f", 0, "0x61627f"},
		{"abcdef", 4, `"abcd"... (4 of 6 bytes shown)`},
		{"ééé", 3, `"é"... (2 of 6 bytes shown)`},
		{"\x00\x01\x02", 2, "0x0001... (2 of 3 bytes shown)"},
		{"abc", 3, `"abc"`},
	} {
		require.Equal(t, tc.want, formatBytes(tc.in, tc.limit), "%q", tc.in)
	}
}

// get --raw prints a value whole and unquoted; get -o FILE saves it.
func TestGetRawAndToFile(t *testing.T) {
	dir := t.TempDir()
	big := writeTemp(t, 5000)
	_, errs, code := cli(t, "", "-d", dir, "-c", "put b @"+big)
	require.Equal(t, 0, code, errs)
	want, err := os.ReadFile(big)
	require.NoError(t, err)
	out, errs, code := cli(t, "", "-d", dir, "-c", "get --raw b")
	require.Equal(t, 0, code, errs)
	require.Equal(t, string(want), out)
	file := filepath.Join(t.TempDir(), "v")
	out, errs, code = cli(t, "", "-d", dir, "-c", "get -o "+file+" b")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "wrote 5000 bytes")
	got, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, want, got)
	_, errs, code = cli(t, "", "-d", dir, "-c", "get -x b")
	require.Equal(t, 1, code)
	requireOneError(t, errs, "usage: get")
}

// -continue-on-error runs every statement after a failing one and still
// exits 1; without it, piped input stops at the first error and names its
// line.
func TestContinueOnError(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := cli(t, "", "-d", dir, "-continue-on-error", "-c", "get nope; put a 1; bogus; get a")
	require.Equal(t, 1, code)
	require.Equal(t, "OK\n\"1\"\n", out)
	require.Equal(t, 2, strings.Count(errs, "error: "), errs)
	out, errs, code = cli(t, "get nope\nput b 2\n'unclosed\nget b\n", "-d", dir, "-continue-on-error")
	require.Equal(t, 1, code)
	require.Equal(t, "OK\n\"2\"\n", out)
	require.Equal(t, 2, strings.Count(errs, "error: "), errs)
	_, errs, code = cli(t, "put c 3\nget nope\nput d 4\n", "-d", dir)
	require.Equal(t, 1, code)
	requireOneError(t, errs, "line 2")
	out, _, _ = cli(t, "", "-d", dir, "-c", "exists d")
	require.Equal(t, "false\n", out)
}

// A log line written while a progress line is shown clears it, prints
// and draws it again; with none shown it prints as it is.
func TestLogLinesPrintAboveProgress(t *testing.T) {
	var b bytes.Buffer
	st := &statusLine{w: &b}
	_, _ = st.Write([]byte("level=WARN msg=first\n"))
	st.show("attach: 40%")
	_, _ = st.Write([]byte("level=WARN msg=second\n"))
	st.clear()
	require.Equal(t, "level=WARN msg=first\n"+
		"\rattach: 40%\x1b[K"+
		"\r\x1b[K"+"level=WARN msg=second\n"+"\rattach: 40%\x1b[K"+
		"\r\x1b[K", b.String())
}

// A flag given where it means nothing is a usage error (exit 2) that says
// so, whether it comes before the subcommand or after it; none of these
// opens, or creates, a database.
func TestMisplacedFlags(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-d", dir, "-since", "5"}, "-since is for dump and backup, not the shell"},
		{[]string{"-since", "5", "load", dir}, "-since is for dump and backup, not load"},
		{[]string{"check", "-since", "5", dir}, "-since is for dump and backup, not check"},
		{[]string{"check", "-c", "stats", dir}, "-c cannot be combined with check"},
		{[]string{"-c", "stats", "check", dir}, "-c cannot be combined with check"},
		{[]string{"-d", dir, "-limit", "-1"}, "-limit must not be negative"},
		{[]string{"stats", "-limit", "-1", dir}, "-limit must not be negative"},
		{[]string{"-d", dir, "-cluster"}, "not the shell"},
		{[]string{"compact", "-to", "k", dir}, "use them with -cluster"},
	} {
		_, errs, code := cli(t, "", c.args...)
		require.Equal(t, 2, code, "%q: %s", c.args, errs)
		require.Contains(t, errs, c.want, "%q", c.args)
		_, err := os.Stat(dir)
		require.True(t, os.IsNotExist(err), "%q made %s", c.args, dir)
	}
}
