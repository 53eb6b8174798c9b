// Command heapkv is a shell for a heapkv database.
//
// Usage:
//
//	heapkv [flags]              interactive shell, or run commands piped on stdin
//	heapkv [flags] -c 'CMDS'    run commands separated by ';', then exit
//	heapkv [flags] check [DIR]  verify a database (exit status 1 if damaged)
//	heapkv [flags] info [DIR]   print a database's directory, files and sizes
//	heapkv [flags] stats [DIR]  print a database's statistics
//	heapkv [flags] scrub [DIR]  verify every heap copy, repairing bad ones
//
// Flags:
//
//	-d DIR      database directory (default ./heapkv-data), created if missing
//	            by the shell, which says so ("created new database in DIR");
//	            on a terminal, a -d naming a directory that does not exist
//	            is confirmed first;
//	            its parent must exist. check, info and stats require an
//	            existing database
//	-c CMDS     run CMDS instead of reading commands from stdin
//	--json      print one JSON object per command: {"cmd":..., "ok":true, ...}
//	            or {"cmd":..., "ok":false, "error":...}
//	--nosync    writes return before they are durable (sync or quit makes
//	            them so); see heapkv.Options.NoSync
//	--limit N   show at most N bytes of a value (default 1024; 0: all)
//	--mirror DIR  keep a further replica of the heap in DIR (repeatable; its
//	            parent must exist); a mirror once added stays part of the
//	            database
//	--resync-rate, --scrub-rate RATE  pace attach and scrub (bytes/s, K/M/G)
//
// Commands: put KEY VALUE, get KEY, del KEY, exists KEY, mput KEY VALUE...,
// scan [PREFIX] [--limit N] [--reverse], count [PREFIX], begin / commit /
// rollback (a transaction; the prompt shows it), batch ... end (atomic),
// sync, checkpoint, stats, replicas, detach ID, attach ID, scrub, check,
// info, help [CMD], quit. "help" in the shell describes each one.
//
// Arguments are bare words, "double-quoted" strings with Go escapes (\n,
// \x00, \"), 'single-quoted' literal strings, 0x-prefixed hex bytes, or
// @FILE for a value read from a file. Values print as Go-quoted strings
// when they are text and as 0x hex otherwise, in both cases in a form that
// can be pasted back as an argument; values longer than --limit are
// truncated with their total size noted.
//
// On a terminal the shell offers line editing, tab completion of command
// names and history kept in ~/.heapkv_history ($HEAPKV_HISTORY overrides;
// lines are saved as typed, values included). Ctrl-C clears the line or
// cancels a running scan, count, check, attach or scrub; Ctrl-D closes the
// database and exits (rolling back an open transaction). When stdin
// is not a terminal, commands are read from it without a prompt.
//
// Errors print as one line starting with "error:" on stderr (or as a JSON
// object on stdout with --json). With -c or piped input the first error
// stops the run. The exit status is 0 on success, 1 after an error (a
// locked or damaged database, a failed command) and 2 for bad usage. Only
// a database that another process (or handle) holds gets the hint "is
// another heapkv process using it?"; a directory that cannot be used for
// another reason (no permission, read-only, not a directory, a missing
// parent) says what the operating system said.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/heapkv/heapkv"
	"golang.org/x/term"
)

const defaultDir = "heapkv-data"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// subcommands are the operator subcommands. check, info, stats, scrub and
// compact run the shell command of the same name on an existing database; dump,
// load and backup move data (transfer.go).
var subcommands = map[string]bool{"check": true, "info": true, "stats": true, "scrub": true, "dump": true, "load": true, "backup": true, "compact": true, "version": true}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// byteRate is a flag of bytes per second with an optional K, M or G
// (binary) suffix.
type byteRate int64

func (r *byteRate) String() string { return strconv.FormatInt(int64(*r), 10) }
func (r *byteRate) Set(v string) error {
	mult := int64(1)
	s := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(v), "B"), "I")
	if n := len(s); n > 0 {
		if i := strings.IndexByte("KMG", s[n-1]); i >= 0 {
			mult, s = int64(1)<<(10*(i+1)), s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("want bytes per second such as 1048576 or 1M, not %q", v)
	}
	*r = byteRate(n * mult)
	return nil
}

// run is the whole program, apart from the process: it parses args, opens
// the database, runs the shell or a subcommand and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("heapkv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("d", defaultDir, "database `DIR`ectory")
	script := fs.String("c", "", "run `CMDS` (separated by ';') and exit")
	jsonOut := fs.Bool("json", false, "print results as JSON, one object per line")
	nosync := fs.Bool("nosync", false, "do not sync each write (sync, checkpoint or quit does)")
	limit := fs.Int("limit", 1024, "show at most `N` bytes of a value; 0 shows all")
	keepGoing := fs.Bool("continue-on-error", false, "with -c or piped input, run every statement after an error (the exit status is still 1)")
	since := fs.Uint64("since", 0, "dump: write an increment to the dump taken at `LSN` (its LSN is printed when it is made); backup: the LSN the existing backup in DEST must hold")
	readOnly := fs.Bool("readonly", false, "open the database read-only: writes fail, no file changes (check, info and stats always open read-only)")
	cluster := fs.Bool("cluster", false, "compact: rewrite the values in key order (the shell's compact cluster), all of them or those of -from/-to")
	from := fs.String("from", "", "compact -cluster: the first `KEY` to cluster (default: the first key)")
	to := fs.String("to", "", "compact -cluster: cluster the keys before `KEY` (default: through the last key)")
	var mirrors stringList
	var resyncRate, scrubRate byteRate
	fs.Var(&resyncRate, "resync-rate", "limit attach copying to `RATE` bytes/s (suffix K, M or G; 0: no limit)")
	fs.Var(&scrubRate, "scrub-rate", "limit scrub reading to `RATE` bytes/s (suffix K, M or G; 0: no limit)")
	fs.Var(&mirrors, "mirror", "keep a further heap replica in `DIR` (repeatable; see heapkv.Options.Mirrors)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: heapkv [flags]                  shell (interactive, or commands piped on stdin)
       heapkv [flags] -c 'CMD; CMD...'  run commands and exit
       heapkv [flags] check|info|stats|scrub|compact [DIR]
       heapkv compact -cluster [-from KEY] [-to KEY] [DIR]
                                              rewrite the values in key order: all, or those of the keys in [-from, -to)
       heapkv [flags] dump [DIR] > FILE       write every key and value to a dump (a versioned, checksummed stream);
                                              with -since LSN, only what changed since the dump at LSN (an increment)
       heapkv [flags] load DIR < FILE         make the new database DIR from a dump, or apply an increment to DIR
       heapkv [flags] backup [DIR] DEST       copy the database, as of one moment, to the new directory DEST;
                                              if DEST holds an earlier backup, copy only what changed since
       heapkv version                         print the program's module version and Go version
check, info, stats, dump and backup open the database read-only; scrub and compact open it read-write.
flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cSet, dSet := false, false
	fs.Visit(func(f *flag.Flag) { cSet, dSet = cSet || f.Name == "c", dSet || f.Name == "d" })
	if *limit < 0 {
		fmt.Fprintln(stderr, "error: -limit must not be negative")
		return 2
	}

	sub, dest := "", ""
	if rest := fs.Args(); len(rest) > 0 {
		sub = rest[0]
		if !subcommands[sub] {
			fmt.Fprintf(stderr, "error: unknown subcommand %q (want check, info, stats, scrub, compact, dump, load, backup or version; run the shell with no arguments)\n", rest[0])
			return 2
		}
		if sub == "version" {
			fmt.Fprintln(stdout, versionText())
			return 0
		}
		// Flags may also follow the subcommand: heapkv check --json DIR.
		if err := fs.Parse(rest[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) { // usage printed: heapkv check --help
				return 0
			}
			return 2
		}
		switch rest = fs.Args(); {
		case sub == "backup" && len(rest) == 2:
			*dir, dest = rest[0], rest[1]
		case sub == "backup" && len(rest) == 1:
			dest = rest[0]
		case sub == "backup":
			fmt.Fprintf(stderr, "error: backup takes [DIR] DEST, got %q\n", rest)
			return 2
		case len(rest) > 1:
			fmt.Fprintf(stderr, "error: %s takes one directory, got %q\n", sub, rest)
			return 2
		case len(rest) == 1:
			*dir = rest[0]
		}
		if cSet {
			fmt.Fprintf(stderr, "error: -c cannot be combined with %s\n", sub)
			return 2
		}
		if clusterFlagsWrong(sub, *cluster, *from, *to, stderr) {
			return 2
		}
		if sub == "load" {
			return runLoad(*dir, stdin, stderr)
		}
		if *since != 0 && sub != "dump" && sub != "backup" {
			fmt.Fprintf(stderr, "error: -since is for dump and backup, not %s\n", sub)
			return 2
		}
		if err := mustExist(*dir); err != nil {
			fmt.Fprintln(stderr, "error: "+err.Error())
			return 1
		}
	} else if clusterFlagsWrong("", *cluster, *from, *to, stderr) { // the shell
		return 2
	}

	status := &statusLine{w: stderr} // log lines print above a progress line
	opts := &heapkv.Options{
		// The inspection subcommands change nothing: not even a MANIFEST,
		// nor a replica attached or resynced by Open.
		ReadOnly:   *readOnly || (sub != "" && sub != "scrub" && sub != "compact"),
		NoSync:     *nosync,
		Mirrors:    mirrors,
		ResyncRate: int64(resyncRate),
		ScrubRate:  int64(scrubRate),
		Logger:     slog.New(slog.NewTextHandler(status, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	isNew := !holdsDatabase(*dir)
	_, statErr := os.Stat(*dir)
	missing := errors.Is(statErr, os.ErrNotExist) && !opts.ReadOnly
	if missing && dSet && sub == "" && !cSet && isTerminal(stdin) {
		// A mistyped -d would make a new, empty database: ask first.
		fmt.Fprintf(stderr, "%s does not exist. Create a new database there? [y/N] ", *dir)
		if !confirmed(stdin) {
			fmt.Fprintln(stderr, "nothing created")
			return 1
		}
	}
	db, err := heapkv.Open(*dir, opts)
	if err != nil {
		msg := errText(err)
		switch {
		case errors.Is(err, heapkv.ErrLocked):
			msg += " (is another heapkv process using it?)"
		case errors.Is(err, heapkv.ErrReadOnly) && holdsDatabase(*dir):
			msg += fmt.Sprintf(" (to recover it: heapkv -d %s -c sync)", *dir)
		}
		fmt.Fprintf(stderr, "error: open %s: %s\n", *dir, msg)
		return 1
	}
	switch {
	case isNew && missing && dSet:
		fmt.Fprintf(stderr, "created new database in %s (the directory did not exist)\n", *dir)
	case isNew:
		fmt.Fprintf(stderr, "created new database in %s\n", *dir)
	}
	s := &shell{db: db, dir: *dir, out: stdout, errw: stderr, status: status, json: *jsonOut, nosync: *nosync, limit: *limit, keepGoing: *keepGoing}

	var runErr error
	switch {
	case sub == "dump" || sub == "backup":
		runErr = runTransfer(db, sub, dest, *since, stdout, stderr)
	case sub == "compact" && *cluster:
		runErr = s.exec(clusterWords(*from, *to), "")
	case sub != "":
		runErr = s.exec([]word{{text: sub}}, "")
	case cSet:
		runErr = s.runScript(*script)
	case isTerminal(stdin):
		runErr = s.runInteractive()
	default:
		runErr = s.runPiped(stdin)
	}
	s.closeTxn() // left open by quit
	if err := db.Close(); err != nil {
		fmt.Fprintf(stderr, "error: %s\n", errText(err)) // it names the directory
		return 1
	}
	if runErr != nil {
		return 1
	}
	return 0
}

// clusterFlagsWrong reports (to stderr) whether -cluster, -from or -to is
// given where it means nothing: anywhere but the compact subcommand, or
// bounds without -cluster.
func clusterFlagsWrong(sub string, cluster bool, from, to string, stderr io.Writer) bool {
	switch {
	case (cluster || from != "" || to != "") && sub != "compact":
		fmt.Fprintf(stderr, "error: -cluster, -from and -to are for the compact subcommand, not %s\n", cmp.Or(sub, "the shell"))
		return true
	case (from != "" || to != "") && !cluster:
		fmt.Fprintln(stderr, "error: -from and -to bound a clustering: use them with -cluster")
		return true
	}
	return false
}

// clusterWords is the shell statement heapkv compact -cluster runs:
// compact cluster, with the bounds given (an empty FROM before a TO is
// the first key, as in the shell).
func clusterWords(from, to string) []word {
	w := []word{{text: "compact"}, {text: "cluster"}}
	if from != "" || to != "" {
		w = append(w, word{text: from})
	}
	if to != "" {
		w = append(w, word{text: to})
	}
	return w
}

// mustExist checks that dir exists and holds something, so that the
// operator subcommands never create a database where a typo pointed them.
func mustExist(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s does not exist", dir)
	} else if err != nil {
		return err
	}
	if len(ents) == 0 {
		return fmt.Errorf("%s is empty, not a heapkv database", dir)
	}
	return nil
}

// holdsDatabase reports whether dir holds a database's MANIFEST. Open
// creates a database exactly where there is none (it refuses a directory
// that holds other files), so when dir holds none before a successful Open,
// that Open created the database.
func holdsDatabase(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "MANIFEST-") {
			return true
		}
	}
	return false
}

// confirmed reads one line from r, a byte at a time (the line editor
// reads r next), and reports whether it is "y" or "yes".
func confirmed(r io.Reader) bool {
	var line []byte
	var b [1]byte
	for len(line) < 64 {
		if n, err := r.Read(b[:]); n == 0 || err != nil || b[0] == '\n' || b[0] == '\r' {
			break
		}
		line = append(line, b[0])
	}
	a := strings.ToLower(strings.TrimSpace(string(line)))
	return a == "y" || a == "yes"
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
