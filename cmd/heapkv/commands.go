package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/heapkv/heapkv"
)

// command is one entry of the shell's command table. Adding a command is
// adding an entry in init below; help, completion, argument counting and
// suggestions for misspellings all come from the table.
type command struct {
	name     string
	aliases  []string
	args     string // argument synopsis for usage lines, e.g. "KEY VALUE"
	min      int    // fewest arguments
	max      int    // most arguments; -1 for no limit
	inBatch  bool   // allowed between "batch" and "end"
	notInTxn bool   // refused between "begin" and "commit" or "rollback"
	summary  string // one line for "help"
	help     string // more for "help NAME"; may be empty
	run      func(s *shell, args []word) (result, error)
}

func (c *command) usage() string { return strings.TrimSpace(c.name + " " + c.args) }

// result is what a command produced: text for a person, fields for --json.
// Either may be empty.
type result struct {
	text   string
	raw    []byte // printed as it is, instead of text, outside JSON mode
	fields map[string]any
}

func ok() (result, error) { return result{text: "OK"}, nil }

var (
	commands []*command          // in help order
	byName   map[string]*command // names and aliases
)

// init fills the table; a package-level literal would make an
// initialization cycle through help.
func init() {
	commands = []*command{
		{name: "put", args: "KEY VALUE", min: 2, max: 2, inBatch: true, run: cmdPut,
			summary: "store VALUE under KEY",
			help:    "VALUE may be @FILE to store a file's contents."},
		{name: "get", args: "KEY", min: 1, max: 3, run: cmdGet, // also get --raw KEY, get -o FILE KEY
			summary: "print the value stored under KEY",
			help: "Text is printed as a quoted string and anything else as 0x hex, both in\n" +
				"a form that can be pasted back as an argument, cut at -limit bytes.\n" +
				"--raw prints the value's bytes as they are, whole, with no newline;\n" +
				"-o FILE writes them to FILE (made 0600; an existing file is replaced).\n" +
				"A missing key is an error."},
		{name: "del", aliases: []string{"delete"}, args: "KEY", min: 1, max: 1, inBatch: true, run: cmdDel,
			summary: "delete KEY (deleting a missing key is not an error)"},
		{name: "exists", args: "KEY", min: 1, max: 1, run: cmdExists,
			summary: "print true if KEY has a value, else false"},
		{name: "mput", args: "KEY VALUE [KEY VALUE...]", min: 2, max: -1, run: cmdMput,
			summary: "store several pairs atomically"},
		{name: "scan", aliases: []string{"ls"}, args: "[PREFIX] [--limit N] [--reverse]", max: -1, run: cmdScan,
			summary: "list keys (with PREFIX) and values in key order",
			help: "Prints one KEY VALUE line per key. --limit N (or -n N) stops after N keys,\n" +
				"--reverse (or -r) lists from the last key down. Ctrl-C stops a long scan.\n" +
				"Inside a transaction the scan sees the transaction's own writes."},
		{name: "count", args: "[PREFIX]", max: 1, run: cmdCount,
			summary: "print how many keys there are (with PREFIX)"},
		{name: "begin", args: "[ro|rw]", max: 1, notInTxn: true, run: cmdBegin,
			summary: "start a transaction; commit or rollback ends it",
			help: "Until commit or rollback, get, put, del, exists, mput, scan and count go\n" +
				"through the transaction: it sees the database as of begin plus its own\n" +
				"writes, which commit applies atomically. commit fails with a conflict\n" +
				"if another commit changed a key it used since begin; begin again to retry.\n" +
				"\"begin ro\" starts a read-only transaction. Quitting rolls back."},
		{name: "commit", run: cmdCommit, summary: "commit the open transaction"},
		{name: "rollback", run: cmdRollback, summary: "discard the open transaction"},
		{name: "batch", notInTxn: true, run: cmdBatch,
			summary: "start an atomic batch of put and del; finish with end",
			help: "The writes between batch and end are applied at end, all or none;\n" +
				"abort discards them. Inside a batch only put, del, end and abort run."},
		{name: "end", inBatch: true, run: cmdEnd, summary: "apply the batch started with batch"},
		{name: "abort", inBatch: true, run: cmdAbort, summary: "discard the batch started with batch"},
		{name: "sync", run: cmdSync, summary: "make every write so far durable (useful with --nosync)"},
		{name: "checkpoint", run: cmdCheckpoint,
			summary: "write a checkpoint so the next open replays less log"},
		{name: "stats", run: cmdStats, summary: "print database statistics"},
		{name: "replicas", run: cmdReplicas, summary: "print the status of each heap replica (see --mirror)"},
		{name: "detach", args: "ID", min: 1, max: 1, run: cmdDetach,
			summary: "take in-sync replica ID out of service (it goes stale)",
			help: "Writes go on to the other replicas and a bitmap records what ID misses,\n" +
				"so that attach copies only those blocks. The last in-sync replica\n" +
				"cannot be detached."},
		{name: "attach", args: "ID", min: 1, max: 1, run: cmdAttach,
			summary: "resync stale replica ID and put it back in service",
			help: "Shows progress and an ETA on a terminal. Ctrl-C stops the copy; what was\n" +
				"copied is kept and the next attach resumes from there. A mirror whose\n" +
				"directory is empty (a new disk, or a mount point without its disk) is\n" +
				"attached only by this command: it fills the directory, so mount the\n" +
				"right disk first."},
		{name: "scrub", run: cmdScrub,
			summary: "verify every heap copy on the in-sync replicas; repair bad ones",
			help: "Shows progress on a terminal; Ctrl-C stops it. Values with no good copy\n" +
				"left are listed and make scrub fail."},
		{name: "compact", args: "[cluster [FROM [TO]]]", max: 3, run: cmdCompact,
			summary: "give free heap space back to the file system",
			help: "Moves the values out of heap segments at most half live, punches holes\n" +
				"where whole segments are free and cuts free segments off the end of the\n" +
				"heap file. Readers and writers go on meanwhile. Ctrl-C stops it; what was\n" +
				"moved stays moved.\n" +
				"compact cluster rewrites every heap value in key order instead, so that\n" +
				"range scans read neighbouring values from neighbouring blocks; it needs\n" +
				"free disk space for a second copy of the values while it runs. With FROM\n" +
				"(and TO) it rewrites only the values of keys from FROM (up to, not\n" +
				"including, TO)."},
		{name: "check", run: cmdCheck,
			summary: "verify every value and the heap allocation (reads everything)"},
		{name: "info", run: cmdInfo, summary: "print the directory, format, geometry, files and sizes"},
		{name: "help", args: "[COMMAND]", max: 1, inBatch: true, run: cmdHelp,
			summary: "list commands, or describe one"},
		{name: "quit", aliases: []string{"exit"}, run: cmdQuit, summary: "close the database and leave"},
	}
	byName = map[string]*command{}
	for _, c := range commands {
		byName[c.name] = c
		for _, a := range c.aliases {
			byName[a] = c
		}
	}
}

// suggest returns the command name nearest to name, or "" if none is near.
func suggest(name string) string {
	best, bestD := "", 3 // suggest only within distance 2
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names) // deterministic among ties
	for _, n := range names {
		d := editDistance(strings.ToLower(name), n)
		if strings.HasPrefix(n, strings.ToLower(name)) && len(name) >= 2 {
			d = min(d, 1)
		}
		if d < bestD && d < max(len(name), 2) {
			best, bestD = n, d
		}
	}
	return best
}

// complete returns the completions of an interactive line: command names
// for the first word of the last statement, and for the word after "help".
func complete(line string) []string {
	lead, cur := "", line
	if i := strings.LastIndexByte(line, ';'); i >= 0 {
		lead, cur = line[:i+1], line[i+1:]
	}
	word := strings.TrimLeft(cur, " \t")
	if rest, ok := strings.CutPrefix(word, "help "); ok {
		word = strings.TrimLeft(rest, " \t")
	}
	lead += cur[:len(cur)-len(word)]
	if strings.ContainsAny(word, " \t") {
		return nil
	}
	var out []string
	for _, c := range commands {
		for _, n := range append([]string{c.name}, c.aliases...) {
			if strings.HasPrefix(n, word) {
				out = append(out, lead+n)
			}
		}
	}
	return out
}

// key returns the key a word stands for.
func key(w word) ([]byte, error) {
	if w.kind == wordFile {
		return nil, fmt.Errorf("@%s: @FILE is only allowed for values (quote it for a key starting with @)", w.text)
	}
	return []byte(w.text), nil
}

// value returns the value a word stands for, reading @FILE words.
func value(w word) ([]byte, error) {
	if w.kind != wordFile {
		return []byte(w.text), nil
	}
	fi, err := os.Stat(w.text)
	if err != nil {
		return nil, err
	}
	if fi.Size() > heapkv.MaxValueSize {
		return nil, fmt.Errorf("%s: %w: %d bytes (limit %d)", w.text, heapkv.ErrValueTooLarge, fi.Size(), heapkv.MaxValueSize)
	}
	return os.ReadFile(w.text)
}

func cmdPut(s *shell, args []word) (result, error) {
	k, err := key(args[0])
	if err != nil {
		return result{}, err
	}
	v, err := value(args[1])
	if err != nil {
		return result{}, err
	}
	if s.batch != nil {
		s.batch.Put(k, v)
		return result{fields: map[string]any{"queued": s.batch.Len()}}, nil
	}
	if s.txn != nil {
		return s.txnWrite(s.txn.Put(k, v))
	}
	if err := s.db.Put(k, v); err != nil {
		return result{}, err
	}
	return ok()
}

func cmdGet(s *shell, args []word) (result, error) {
	raw, file := false, ""
	switch {
	case len(args) == 2 && args[0].text == "--raw":
		raw, args = true, args[1:]
	case len(args) == 3 && args[0].text == "-o":
		file, args = args[1].text, args[2:]
	case len(args) != 1:
		return result{}, errors.New("usage: get [--raw | -o FILE] KEY")
	}
	k, err := key(args[0])
	if err != nil {
		return result{}, err
	}
	v, err := s.get(k)
	if errors.Is(err, heapkv.ErrNotFound) {
		return result{}, withCode(fmt.Errorf("not found: %s", formatBytes(string(k), s.limit)), "not_found")
	} else if err != nil {
		return result{}, err
	}
	f := map[string]any{"size": len(v)}
	setBytes(f, "key", string(k))
	if file != "" {
		if err := writeFileAtomic(file, v); err != nil {
			return result{}, err
		}
		f["file"] = file
		return result{text: fmt.Sprintf("wrote %d bytes to %s", len(v), file), fields: f}, nil
	}
	setBytes(f, "value", string(v))
	if raw {
		return result{raw: v, fields: f}, nil
	}
	return result{text: formatBytes(string(v), s.limit), fields: f}, nil
}

// writeFileAtomic writes b to path through a temporary file renamed over
// it, made 0600: a value is the database's data.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	err := os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func cmdDel(s *shell, args []word) (result, error) {
	k, err := key(args[0])
	if err != nil {
		return result{}, err
	}
	if s.batch != nil {
		s.batch.Delete(k)
		return result{fields: map[string]any{"queued": s.batch.Len()}}, nil
	}
	if s.txn != nil {
		return s.txnWrite(s.txn.Delete(k))
	}
	if err := s.db.Delete(k); err != nil {
		return result{}, err
	}
	return ok()
}

func cmdExists(s *shell, args []word) (result, error) {
	k, err := key(args[0])
	if err != nil {
		return result{}, err
	}
	_, err = s.get(k)
	found := err == nil
	if err != nil && !errors.Is(err, heapkv.ErrNotFound) {
		return result{}, err
	}
	return result{text: fmt.Sprint(found), fields: map[string]any{"exists": found}}, nil
}

func cmdMput(s *shell, args []word) (result, error) {
	if len(args)%2 != 0 {
		return result{}, fmt.Errorf("mput: KEY %s has no VALUE", formatBytes(args[len(args)-1].text, s.limit))
	}
	if s.txn != nil {
		return s.txnMput(args)
	}
	b := s.db.NewBatch()
	for i := 0; i < len(args); i += 2 {
		k, err := key(args[i])
		if err != nil {
			return result{}, err
		}
		v, err := value(args[i+1])
		if err != nil {
			return result{}, err
		}
		b.Put(k, v)
	}
	if err := s.db.Apply(b, nil); err != nil {
		return result{}, err
	}
	return result{text: fmt.Sprintf("OK (%d writes)", b.Len()), fields: map[string]any{"writes": b.Len()}}, nil
}

// get reads key through the open transaction, if any.
func (s *shell) get(k []byte) ([]byte, error) {
	if s.txn != nil {
		return s.txn.Get(k)
	}
	return s.db.Get(k)
}

// txnWrite counts a write buffered in the open transaction.
func (s *shell) txnWrite(err error) (result, error) {
	if err != nil {
		return result{}, err
	}
	s.txnWrites++
	return result{text: "QUEUED", fields: map[string]any{"queued": s.txnWrites}}, nil
}

// txnMput buffers mput's pairs in the open transaction, all or none.
func (s *shell) txnMput(args []word) (result, error) {
	keys, vals := make([][]byte, 0, len(args)/2), make([][]byte, 0, len(args)/2)
	for i := 0; i < len(args); i += 2 {
		k, err := key(args[i])
		if err != nil {
			return result{}, err
		}
		v, err := value(args[i+1])
		if err != nil {
			return result{}, err
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	for i := range keys {
		if err := s.txn.Put(keys[i], vals[i]); err != nil {
			return result{}, fmt.Errorf("mput: %w (%d of its writes were queued in the transaction)", err, i)
		}
		s.txnWrites++
	}
	return result{text: fmt.Sprintf("QUEUED (%d writes)", len(keys)), fields: map[string]any{"queued": s.txnWrites}}, nil
}

func cmdBatch(s *shell, _ []word) (result, error) {
	if s.batch != nil {
		return result{}, errors.New("batch: a batch is already open; end or abort it first")
	}
	s.batch = s.db.NewBatch()
	return result{}, nil
}

func cmdEnd(s *shell, _ []word) (result, error) {
	if s.batch == nil {
		return result{}, errors.New("end: no batch is open")
	}
	b := s.batch
	s.batch = nil
	if err := s.db.Apply(b, nil); err != nil {
		return result{}, fmt.Errorf("batch discarded: %w", err)
	}
	return result{text: fmt.Sprintf("OK (%d writes)", b.Len()), fields: map[string]any{"writes": b.Len()}}, nil
}

func cmdAbort(s *shell, _ []word) (result, error) {
	if s.batch == nil {
		return result{}, errors.New("abort: no batch is open")
	}
	n := s.batch.Len()
	s.batch = nil
	return result{text: fmt.Sprintf("discarded %d writes", n), fields: map[string]any{"discarded": n}}, nil
}

func cmdSync(s *shell, _ []word) (result, error) {
	if err := s.db.Sync(); err != nil {
		return result{}, err
	}
	return ok()
}

func cmdCheckpoint(s *shell, _ []word) (result, error) {
	if err := s.db.Checkpoint(); err != nil {
		return result{}, err
	}
	return ok()
}

func cmdStats(s *shell, _ []word) (result, error) {
	st, err := s.db.Stats()
	if err != nil {
		return result{}, err
	}
	return result{text: statsTable(st), fields: map[string]any{"stats": st}}, nil
}

func cmdCheck(s *shell, _ []word) (result, error) {
	rep, err := s.db.Check(s.ctx)
	if rep == nil || err != nil {
		// A check that stopped has no verdict: its partial report would
		// end in "OK".
		return result{}, err
	}
	return result{text: rep.String(), fields: map[string]any{"report": rep}}, err
}

func cmdInfo(s *shell, _ []word) (result, error) {
	st, err := s.db.Stats()
	if err != nil {
		return result{}, err
	}
	abs, err := filepath.Abs(s.dir)
	if err != nil {
		abs = s.dir
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return result{}, err
	}
	var files []string
	for _, e := range ents {
		if e.IsDir() {
			files = append(files, e.Name()+"/")
		} else {
			files = append(files, e.Name())
		}
	}
	var disk int64
	filepath.WalkDir(s.dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				disk += fi.Size()
			}
		}
		return nil // a file removed meanwhile is not worth failing for
	})
	var b strings.Builder
	line := func(k, format string, a ...any) { fmt.Fprintf(&b, "%-12s %s\n", k, fmt.Sprintf(format, a...)) }
	line("dir", "%s", abs)
	line("files", "%s", strings.Join(files, " "))
	line("disk", "%s", humanBytes(disk))
	line("format", "v%d, %s blocks, %s segments", st.FormatVersion, humanBytes(int64(st.BlockSize)), humanBytes(st.SegmentSize))
	line("keys", "%d", st.Keys)
	line("heap", "%s in %d segments, %s live", humanBytes(st.HeapFileBytes), st.HeapSegments, humanBytes(st.HeapLiveBytes))
	line("log", "%s in %d files", humanBytes(st.LogBytes), st.LogFiles)
	line("index", "%s", humanBytes(st.IndexBytes))
	line("lsn", "%d (checkpoint %d)", st.LSN, st.CheckpointLSN)
	line("durability", "%s", map[bool]string{false: "sync every write", true: "nosync (Sync, checkpoint or close makes writes durable)"}[s.nosync])
	line("limits", "key %d bytes, value %d bytes", heapkv.MaxKeySize, heapkv.MaxValueSize)
	if st.Failed != "" {
		line("FAILED", "%s", st.Failed)
	}
	f := map[string]any{
		"dir": abs, "files": files, "disk_bytes": disk, "keys": st.Keys,
		"format_version": st.FormatVersion, "block_size": st.BlockSize, "segment_size": st.SegmentSize,
		"heap_file_bytes": st.HeapFileBytes, "heap_segments": st.HeapSegments,
		"log_bytes": st.LogBytes, "log_files": st.LogFiles, "index_bytes": st.IndexBytes,
		"lsn": st.LSN, "checkpoint_lsn": st.CheckpointLSN, "nosync": s.nosync,
		"max_key_size": heapkv.MaxKeySize, "max_value_size": heapkv.MaxValueSize,
	}
	return result{text: strings.TrimSuffix(b.String(), "\n"), fields: f}, nil
}

const syntaxHelp = `Arguments: bare words; "double-quoted" with Go escapes (\n \t \" \x00 \u00e9);
'single-quoted' taken literally; 0x6869 hex bytes; @FILE reads a value from a file.
Separate commands with ';'. A word starting with # begins a comment.`

func cmdHelp(s *shell, args []word) (result, error) {
	if len(args) == 1 {
		c := byName[strings.ToLower(args[0].text)]
		if c == nil {
			return result{}, unknownCommand(args[0].text)
		}
		text := "usage: " + c.usage() + "\n" + c.summary
		if len(c.aliases) > 0 {
			text += "\naliases: " + strings.Join(c.aliases, ", ")
		}
		if c.help != "" {
			text += "\n\n" + c.help
		}
		return result{text: text, fields: map[string]any{"text": text}}, nil
	}
	var b strings.Builder
	b.WriteString("Commands:\n")
	width := 0
	for _, c := range commands {
		width = max(width, len(c.usage()))
	}
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, c.usage(), c.summary)
	}
	b.WriteString("\n" + syntaxHelp)
	return result{text: b.String(), fields: map[string]any{"text": b.String()}}, nil
}

func cmdQuit(s *shell, _ []word) (result, error) {
	s.quit = true
	return result{}, nil
}

func unknownCommand(name string) error {
	msg := fmt.Sprintf("unknown command %s", formatBytes(name, 40))
	if near := suggest(name); near != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", near)
	}
	return errors.New(msg + `; type "help" for the list`)
}
