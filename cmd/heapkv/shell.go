package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"

	"github.com/heapkv/heapkv"
	"github.com/peterh/liner"
)

// shell runs statements against an open database and prints their results.
type shell struct {
	db     *heapkv.DB
	dir    string
	out    io.Writer   // results, and errors in --json mode
	errw   io.Writer   // errors in text mode
	status *statusLine // the progress line, over errw
	json   bool
	nosync bool
	limit  int // bytes of a value shown before truncating; 0 for all
	// keepGoing: -c and piped input run every statement after an error
	// (-continue-on-error); the exit status is still 1.
	keepGoing bool

	batch *heapkv.Batch // open batch between "batch" and "end", else nil

	txn       *heapkv.Txn // open transaction between "begin" and "commit" or "rollback", else nil
	txnWrites int         // puts and dels in txn
	txnRO     bool        // txn is read-only

	interactive bool // reading a terminal: show progress lines and scan totals
	quit        bool // set by quit
	ctx         context.Context

	// mu guards cancel, which stops the running command on Ctrl-C.
	mu     sync.Mutex
	cancel context.CancelFunc
}

// errReported is returned by exec once it has printed the error.
var errReported = errors.New("error reported")

// exec runs one statement and prints its result or error. where, if not
// empty, prefixes error messages (e.g. "line 3").
func (s *shell) exec(stmt []word, where string) error {
	name := stmt[0].text
	c := byName[strings.ToLower(name)]
	res, err := s.call(c, name, stmt[1:])
	if err != nil {
		msg := errText(err)
		if where != "" {
			msg = where + ": " + msg
		}
		s.emit(name, res, msg, errCode(err))
		return errReported
	}
	s.emit(name, res, "", "")
	return nil
}

func (s *shell) call(c *command, name string, args []word) (result, error) {
	switch {
	case c == nil:
		return result{}, withCode(unknownCommand(name), "unknown_command")
	case s.batch != nil && !c.inBatch:
		return result{}, withCode(fmt.Errorf("%s: not allowed inside a batch (put, del, end, abort and help are)", c.name), "usage")
	case s.txn != nil && c.notInTxn:
		return result{}, withCode(fmt.Errorf("%s: not allowed inside a transaction (commit or rollback it first)", c.name), "usage")
	case len(args) < c.min:
		missing := strings.Fields(strings.NewReplacer("[", "", "]", "", "...", "").Replace(c.args))
		return result{}, withCode(fmt.Errorf("%s: missing %s (usage: %s)", c.name, missing[min(len(args), len(missing)-1)], c.usage()), "usage")
	case c.max >= 0 && len(args) > c.max:
		return result{}, withCode(fmt.Errorf("%s: too many arguments (usage: %s)", c.name, c.usage()), "usage")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.mu.Lock()
	s.ctx, s.cancel = ctx, cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cancel = nil
		s.mu.Unlock()
	}()
	return runGuarded(s, c, args)
}

// errInternal marks a command that panicked: a bug, reported in one line
// like any other error instead of a stack trace that kills the shell.
var errInternal = errors.New("internal error (a bug: please report it)")

// runGuarded runs c, turning a panic into an error wrapping errInternal.
func runGuarded(s *shell, c *command, args []word) (res result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = result{}, fmt.Errorf("%s: %w: %v", c.name, errInternal, p)
		}
	}()
	return c.run(s, args)
}

// interrupt cancels the running command, if any.
func (s *shell) interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
}

// emit prints a result, or an error if msg is not empty. In --json mode
// every statement prints exactly one JSON object on a line of its own:
// {"cmd":NAME,"ok":true,...fields} or
// {"cmd":NAME,"ok":false,"error":MSG,"code":CODE} (errcode.go).
func (s *shell) emit(name string, res result, msg, code string) {
	if s.json {
		obj := map[string]any{}
		for k, v := range res.fields {
			obj[k] = v
		}
		if c := byName[strings.ToLower(name)]; c != nil {
			obj["cmd"] = c.name
		} else {
			setBytes(obj, "cmd", name)
		}
		obj["ok"] = msg == ""
		if msg != "" {
			obj["error"], obj["code"] = msg, code
		}
		enc := json.NewEncoder(s.out)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(obj); err != nil {
			fmt.Fprintf(s.errw, "error: encode JSON: %v\n", err)
		}
		return
	}
	switch {
	case res.raw != nil:
		_, _ = s.out.Write(res.raw)
	case res.text != "":
		fmt.Fprintln(s.out, res.text)
	}
	if msg != "" {
		fmt.Fprintln(s.errw, "error: "+msg)
	}
}

// fail prints a statement-independent error (a syntax error, an unfinished
// batch) the way exec prints command errors.
func (s *shell) fail(where string, err error) {
	msg := errText(err)
	if where != "" {
		msg = where + ": " + msg
	}
	if s.json {
		s.emit("", result{}, msg, errCode(err))
		return
	}
	fmt.Fprintln(s.errw, "error: "+msg)
}

// runScript runs the statements of a -c argument, stopping at the first
// error. Nothing runs if the script does not parse.
func (s *shell) runScript(script string) error {
	stmts, err := parseLine(script)
	if err != nil {
		s.fail("", err)
		return errReported
	}
	failed := false
	for _, st := range stmts {
		err := s.exec(st, "")
		if s.quit || (err != nil && !s.keepGoing) {
			return err
		}
		failed = failed || err != nil
	}
	if err := s.finish(); err != nil || !failed {
		return err
	}
	return errReported
}

// runPiped runs statements read from a non-terminal r, line by line, with
// no prompt, stopping at the first error (its line is named) unless
// s.keepGoing.
func (s *shell) runPiped(r io.Reader) error {
	br := bufio.NewReader(r)
	failed := false
	for n := 1; ; n++ {
		line, rerr := br.ReadString('\n')
		if rerr != nil && rerr != io.EOF {
			s.fail("", fmt.Errorf("read input: %w", rerr))
			return errReported
		}
		where := fmt.Sprintf("line %d", n)
		stmts, err := parseLine(line)
		if err != nil {
			s.fail(where, err)
			if !s.keepGoing {
				return errReported
			}
			failed = true
		}
		for _, st := range stmts {
			err := s.exec(st, where)
			if s.quit || (err != nil && !s.keepGoing) {
				return err
			}
			failed = failed || err != nil
		}
		if rerr == io.EOF {
			if err := s.finish(); err != nil || !failed {
				return err
			}
			return errReported
		}
	}
}

// finish reports a batch or transaction left open at the end of the input.
func (s *shell) finish() error {
	if s.txn != nil {
		n := s.rollbackTxn()
		s.fail("", fmt.Errorf(`input ended inside a transaction; rolled back, its %d writes were discarded (finish it with "commit")`, n))
		return errReported
	}
	if s.batch == nil {
		return nil
	}
	n := s.batch.Len()
	s.batch = nil
	s.fail("", fmt.Errorf(`input ended inside a batch; its %d writes were discarded (finish a batch with "end")`, n))
	return errReported
}

// prompt returns the interactive prompt, showing the directory and any open
// batch, e.g. "heapkv:heapkv-data> ".
func (s *shell) prompt() string {
	d := filepath.Clean(s.dir)
	if len(d) > 32 {
		d = "…" + string(filepath.Separator) + filepath.Base(d)
	}
	if s.batch != nil {
		return fmt.Sprintf("heapkv:%s batch(%d)> ", d, s.batch.Len())
	}
	if s.txn != nil {
		if s.txnRO {
			return "heapkv:" + d + " (txn ro)> "
		}
		return "heapkv:" + d + " (txn)> "
	}
	return "heapkv:" + d + "> "
}

// historyPath is $HEAPKV_HISTORY, else ~/.heapkv_history, else "".
func historyPath() string {
	if p := os.Getenv("HEAPKV_HISTORY"); p != "" {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".heapkv_history")
	}
	return ""
}

// saveHistory writes ln's history to path (if not "") through a temporary
// file renamed over it, so that a kill in the middle leaves the old one.
func saveHistory(ln *liner.State, path string) {
	if path == "" {
		return
	}
	var b bytes.Buffer
	if _, err := ln.WriteHistory(&b); err == nil {
		_ = writeFileAtomic(path, b.Bytes()) // history is a convenience: a failure is not reported
	}
}

// runInteractive reads statements from the terminal with line editing,
// history and completion until quit or Ctrl-D. Errors are printed and the
// shell goes on. Ctrl-C clears the line at the prompt and cancels a running
// command (check) otherwise.
func (s *shell) runInteractive() error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	defer func() {
		signal.Stop(sigs)
		close(sigs)
	}()
	go func() {
		for range sigs {
			s.interrupt()
		}
	}()

	s.interactive = true
	ln := liner.NewLiner()
	defer ln.Close()
	ln.SetCompleter(complete)
	ln.SetTabCompletionStyle(liner.TabPrints)
	hist := historyPath()
	if hist != "" {
		if f, err := os.Open(hist); err == nil {
			ln.ReadHistory(f)
			f.Close()
		}
	}
	fmt.Fprintf(s.out, "heapkv shell on %s; \"help\" lists commands, Ctrl-D quits.\n", s.dir)
	for !s.quit {
		line, err := ln.Prompt(s.prompt())
		if err == io.EOF {
			fmt.Fprintln(s.out)
			break
		} else if err != nil {
			s.fail("", err)
			break
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		ln.AppendHistory(line)
		saveHistory(ln, hist) // now: a killed shell or a closed terminal keeps it
		stmts, err := parseLine(line)
		if err != nil {
			s.fail("", err)
			continue
		}
		for _, st := range stmts {
			if s.exec(st, "") != nil || s.quit {
				break
			}
		}
	}
	if s.batch != nil {
		fmt.Fprintf(s.errw, "warning: discarded the open batch of %d writes\n", s.batch.Len())
		s.batch = nil
	}
	s.closeTxn()
	return nil
}

// closeTxn rolls back a transaction still open when the shell quits, saying so.
func (s *shell) closeTxn() {
	if s.txn != nil {
		n := s.rollbackTxn()
		fmt.Fprintf(s.errw, "warning: rolled back the open transaction; its %d writes were discarded\n", n)
	}
}
