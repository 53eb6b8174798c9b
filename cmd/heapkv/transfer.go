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
// heapkv.Import from stdin, heapkv.DB.Backup. Each stops cleanly on
// Ctrl-C (a load or backup then leaves no directory) and reports what it
// moved on stderr, so that stdout carries the dump alone.

// runTransfer runs dump or backup on db (opened read-only).
func runTransfer(db *heapkv.DB, sub, dest string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var st heapkv.ExportStats
	var err error
	if sub == "dump" {
		st, err = db.Export(ctx, stdout, nil)
	} else {
		st, err = db.Backup(ctx, dest, nil)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %s: %s\n", sub, errText(err))
		return err
	}
	what := "dumped"
	if sub == "backup" {
		what = "backed up to " + dest + ":"
	}
	fmt.Fprintf(stderr, "%s %d keys, %s of keys and values, as of LSN %d\n", what, st.Entries, humanBytes(st.Bytes), st.LSN)
	return nil
}

// runLoad makes the new database dir from the dump on stdin and returns
// the exit status.
func runLoad(dir string, stdin io.Reader, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := &heapkv.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	st, err := heapkv.Import(ctx, dir, stdin, opts)
	if err != nil {
		fmt.Fprintf(stderr, "error: load: %s\n", errText(err))
		return 1
	}
	fmt.Fprintf(stderr, "loaded %d keys, %s of keys and values, into %s\n", st.Entries, humanBytes(st.Bytes), dir)
	return 0
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
