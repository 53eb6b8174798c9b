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

// invocation is what the command line asks for: the flags, and the
// subcommand with its arguments.
type invocation struct {
	dir, script                          string
	jsonOut, nosync, keepGoing, readOnly bool
	limit                                int
	since                                uint64
	cluster                              bool
	from, to                             string
	mirrors                              stringList
	resyncRate, scrubRate                byteRate

	cSet, dSet bool   // -c and -d were given
	sub, dest  string // the subcommand ("" for the shell); backup's DEST
}

// run is the whole program, apart from the process: it parses args, opens
// the database, runs the shell or a subcommand and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	inv, exit, done := parseInvocation(args, stdout, stderr)
	if done {
		return exit
	}
	if inv.sub == "load" {
		return runLoad(inv.dir, stdin, stderr)
	}
	if inv.sub != "" {
		if err := mustExist(inv.dir); err != nil {
			fmt.Fprintln(stderr, "error: "+err.Error())
			return 1
		}
	}
	return inv.openAndRun(stdin, stdout, stderr)
}

// parseInvocation parses the command line. done reports that there is
// nothing more to do (help or version printed, or a usage error), and exit
// is then the exit status: 0, or 2 for a usage error.
func parseInvocation(args []string, stdout, stderr io.Writer) (inv *invocation, exit int, done bool) {
	inv = &invocation{}
	fs := flag.NewFlagSet("heapkv", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&inv.dir, "d", defaultDir, "database `DIR`ectory")
	fs.StringVar(&inv.script, "c", "", "run `CMDS` (separated by ';') and exit")
	fs.BoolVar(&inv.jsonOut, "json", false, "print results as JSON, one object per line")
	fs.BoolVar(&inv.nosync, "nosync", false, "do not sync each write (sync, checkpoint or quit does)")
	fs.IntVar(&inv.limit, "limit", 1024, "show at most `N` bytes of a value; 0 shows all")
	fs.BoolVar(&inv.keepGoing, "continue-on-error", false, "with -c or piped input, run every statement after an error (the exit status is still 1)")
	fs.Uint64Var(&inv.since, "since", 0, "dump: write an increment to the dump taken at `LSN` (its LSN is printed when it is made); backup: the LSN the existing backup in DEST must hold")
	fs.BoolVar(&inv.readOnly, "readonly", false, "open the database read-only: writes fail, no file changes (check, info and stats always open read-only)")
	fs.BoolVar(&inv.cluster, "cluster", false, "compact: rewrite the values in key order (the shell's compact cluster), all of them or those of -from/-to")
	fs.StringVar(&inv.from, "from", "", "compact -cluster: the first `KEY` to cluster (default: the first key)")
	fs.StringVar(&inv.to, "to", "", "compact -cluster: cluster the keys before `KEY` (default: through the last key)")
	fs.Var(&inv.resyncRate, "resync-rate", "limit attach copying to `RATE` bytes/s (suffix K, M or G; 0: no limit)")
	fs.Var(&inv.scrubRate, "scrub-rate", "limit scrub reading to `RATE` bytes/s (suffix K, M or G; 0: no limit)")
	fs.Var(&inv.mirrors, "mirror", "keep a further heap replica in `DIR` (repeatable; see heapkv.Options.Mirrors)")
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
	usageError := func(format string, a ...any) (*invocation, int, bool) {
		fmt.Fprintf(stderr, "error: "+format+"\n", a...)
		return nil, 2, true
	}
	parse := func(args []string) (int, bool) {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) { // usage printed: heapkv --help, heapkv check --help
				return 0, true
			}
			return 2, true
		}
		return 0, false
	}
	if exit, done := parse(args); done {
		return nil, exit, true
	}
	if rest := fs.Args(); len(rest) > 0 {
		inv.sub = rest[0]
		if !subcommands[inv.sub] {
			return usageError("unknown subcommand %q (want check, info, stats, scrub, compact, dump, load, backup or version; run the shell with no arguments)", inv.sub)
		}
		if inv.sub == "version" {
			fmt.Fprintln(stdout, versionText())
			return nil, 0, true
		}
		// Flags may also follow the subcommand: heapkv check --json DIR.
		if exit, done := parse(rest[1:]); done {
			return nil, exit, true
		}
		switch rest = fs.Args(); {
		case inv.sub == "backup" && len(rest) == 2:
			inv.dir, inv.dest = rest[0], rest[1]
		case inv.sub == "backup" && len(rest) == 1:
			inv.dest = rest[0]
		case inv.sub == "backup":
			return usageError("backup takes [DIR] DEST, got %q", rest)
		case len(rest) > 1:
			return usageError("%s takes one directory, got %q", inv.sub, rest)
		case len(rest) == 1:
			inv.dir = rest[0]
		}
	}
	fs.Visit(func(f *flag.Flag) { inv.cSet, inv.dSet = inv.cSet || f.Name == "c", inv.dSet || f.Name == "d" })
	what := inv.sub
	if what == "" {
		what = "the shell"
	}
	switch {
	case inv.limit < 0:
		return usageError("-limit must not be negative")
	case inv.cSet && inv.sub != "":
		return usageError("-c cannot be combined with %s", inv.sub)
	case (inv.cluster || inv.from != "" || inv.to != "") && inv.sub != "compact":
		return usageError("-cluster, -from and -to are for the compact subcommand, not %s", what)
	case (inv.from != "" || inv.to != "") && !inv.cluster:
		return usageError("-from and -to bound a clustering: use them with -cluster")
	case inv.since != 0 && inv.sub != "dump" && inv.sub != "backup":
		return usageError("-since is for dump and backup, not %s", what)
	}
	return inv, 0, false
}

// openAndRun opens the database and runs the subcommand, the -c script or
// the shell on it; it returns the exit status.
func (inv *invocation) openAndRun(stdin io.Reader, stdout, stderr io.Writer) int {
	sub := inv.sub
	status := &statusLine{w: stderr} // log lines print above a progress line
	opts := &heapkv.Options{
		// The inspection subcommands change nothing: not even a MANIFEST,
		// nor a replica attached or resynced by Open.
		ReadOnly:   inv.readOnly || (sub != "" && sub != "scrub" && sub != "compact"),
		NoSync:     inv.nosync,
		Mirrors:    inv.mirrors,
		ResyncRate: int64(inv.resyncRate),
		ScrubRate:  int64(inv.scrubRate),
		Logger:     slog.New(slog.NewTextHandler(status, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	isNew := !holdsDatabase(inv.dir)
	_, statErr := os.Stat(inv.dir)
	missing := errors.Is(statErr, os.ErrNotExist) && !opts.ReadOnly
	if missing && inv.dSet && sub == "" && !inv.cSet && isTerminal(stdin) {
		// A mistyped -d would make a new, empty database: ask first.
		fmt.Fprintf(stderr, "%s does not exist. Create a new database there? [y/N] ", inv.dir)
		if !confirmed(stdin) {
			fmt.Fprintln(stderr, "nothing created")
			return 1
		}
	}
	db, err := heapkv.Open(inv.dir, opts)
	if err != nil {
		msg := errText(err)
		switch {
		case errors.Is(err, heapkv.ErrLocked):
			msg += " (is another heapkv process using it?)"
		case errors.Is(err, heapkv.ErrReadOnly) && holdsDatabase(inv.dir):
			msg += fmt.Sprintf(" (to recover it: heapkv -d %s -c sync)", inv.dir)
		}
		fmt.Fprintf(stderr, "error: open %s: %s\n", inv.dir, msg)
		return 1
	}
	switch {
	case isNew && missing && inv.dSet:
		fmt.Fprintf(stderr, "created new database in %s (the directory did not exist)\n", inv.dir)
	case isNew:
		fmt.Fprintf(stderr, "created new database in %s\n", inv.dir)
	}
	s := &shell{db: db, dir: inv.dir, out: stdout, errw: stderr, status: status, json: inv.jsonOut, nosync: inv.nosync, limit: inv.limit, keepGoing: inv.keepGoing}

	var runErr error
	switch {
	case sub == "dump" || sub == "backup":
		runErr = runTransfer(db, sub, inv.dest, inv.since, stdout, stderr)
	case sub == "compact" && inv.cluster:
		runErr = s.exec(clusterWords(inv.from, inv.to), "")
	case sub != "":
		runErr = s.exec([]word{{text: sub}}, "")
	case inv.cSet:
		runErr = s.runScript(inv.script)
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
