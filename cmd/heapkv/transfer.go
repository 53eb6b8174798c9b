package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"

	"github.com/heapkv/heapkv"
)

// The dump, load and backup subcommands: heapkv.DB.Export to stdout,
// heapkv.Import (or DB.ApplyIncrement) from stdin, heapkv.DB.Backup. Each
// stops cleanly on Ctrl-C (a new copy then leaves no directory; an
// increment stopped half-way is finished by running it again) and reports
// what it moved on stderr, so that stdout carries the dump alone.

// runTransfer runs dump or backup on db (opened read-only).
func runTransfer(db *heapkv.DB, sub, dest string, since uint64, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var st heapkv.ExportStats
	var err error
	if sub == "dump" {
		st, err = db.Export(ctx, stdout, &heapkv.ExportOptions{Since: since})
	} else {
		st, err = db.Backup(ctx, dest, &heapkv.ExportOptions{Since: since})
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %s: %s\n", sub, errText(err))
		return err
	}
	what := "dumped"
	if sub == "backup" {
		what = "backed up to " + dest + ":"
	}
	fmt.Fprintf(stderr, "%s %s\n", what, transferText(st))
	return nil
}

// transferText says what an export, import or increment moved.
func transferText(st heapkv.ExportStats) string {
	if st.Since == 0 {
		return fmt.Sprintf("%d keys, %s of keys and values, as of LSN %d", st.Entries, humanBytes(st.Bytes), st.LSN)
	}
	return fmt.Sprintf("the changes from LSN %d to %d: %d keys (%d unchanged, sent as keys alone; %d deleted), %s of keys and values",
		st.Since, st.LSN, st.Entries, st.Kept, st.Deleted, humanBytes(st.Bytes))
}

// runLoad makes the new database dir from the dump on stdin, or applies
// an increment to the database in dir, and returns the exit status.
func runLoad(dir string, stdin io.Reader, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := &heapkv.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	var st heapkv.ExportStats
	var err error
	if holdsDatabase(dir) {
		st, err = applyIncrement(ctx, dir, stdin, opts)
	} else {
		st, err = heapkv.Import(ctx, dir, stdin, opts)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: load: %s\n", errText(err))
		return 1
	}
	fmt.Fprintf(stderr, "loaded %s into %s\n", transferText(st), dir)
	return 0
}

// applyIncrement opens the database in dir and applies the increment on r.
func applyIncrement(ctx context.Context, dir string, r io.Reader, opts *heapkv.Options) (heapkv.ExportStats, error) {
	db, err := heapkv.Open(dir, opts)
	if err != nil {
		return heapkv.ExportStats{}, err
	}
	st, err := db.ApplyIncrement(ctx, r)
	if err == nil {
		err = db.Sync()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// versionText names the module version the program was built from (a
// pseudo-version or "(devel)" for a checkout) and the Go version.
func versionText() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "heapkv (no build information) " + runtime.Version()
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return fmt.Sprintf("heapkv %s %s", v, bi.GoVersion)
}
