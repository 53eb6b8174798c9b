package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/heapkv/heapkv"
)

// scanArgs are the parsed arguments of scan and count.
type scanArgs struct {
	prefix  []byte
	limit   int // keys; 0 for all
	reverse bool
}

// parseScanArgs reads [PREFIX] [--limit N] [--reverse] in any order. Only
// bare words are options, so a quoted "--x" is a prefix.
func parseScanArgs(name string, args []word, opts bool) (scanArgs, error) {
	var a scanArgs
	havePrefix := false
	for i := 0; i < len(args); i++ {
		w := args[i]
		if opts && w.kind == wordBare && strings.HasPrefix(w.text, "-") {
			opt, val, hasVal := strings.Cut(w.text, "=")
			switch opt {
			case "--reverse", "-r":
				if hasVal {
					return a, fmt.Errorf("%s: %s takes no value", name, opt)
				}
				a.reverse = true
				continue
			case "--limit", "-n":
				if !hasVal {
					if i+1 >= len(args) {
						return a, fmt.Errorf("%s: %s needs a number", name, opt)
					}
					i++
					val = args[i].text
				}
				n, err := strconv.Atoi(val)
				if err != nil || n < 0 {
					return a, fmt.Errorf("%s: %s wants a count of keys, not %s", name, opt, formatBytes(val, 40))
				}
				a.limit = n
				continue
			}
			return a, fmt.Errorf("%s: unknown option %s (quote a prefix that starts with -)", name, formatBytes(w.text, 40))
		}
		if w.kind == wordFile {
			return a, fmt.Errorf("%s: @FILE is only allowed for values (quote a prefix starting with @)", name)
		}
		if havePrefix {
			return a, fmt.Errorf("%s: more than one PREFIX (usage: %s)", name, byName[name].usage())
		}
		a.prefix, havePrefix = []byte(w.text), true
	}
	return a, nil
}

// newIter returns an iterator over keys with prefix, through the open
// transaction if there is one.
func (s *shell) newIter(prefix []byte) (*heapkv.Iterator, error) {
	opts := &heapkv.IterOptions{Prefix: prefix}
	if s.txn != nil {
		return s.txn.NewIter(opts)
	}
	return s.db.NewIter(opts)
}

// errCancelled reports a command stopped by Ctrl-C after n keys.
func errCancelled(name string, n int64) error {
	return fmt.Errorf("%s: cancelled (Ctrl-C) after %d keys", name, n)
}

func cmdScan(s *shell, args []word) (result, error) {
	a, err := parseScanArgs("scan", args, true)
	if err != nil {
		return result{}, err
	}
	it, err := s.newIter(a.prefix)
	if err != nil {
		return result{}, err
	}
	defer it.Close()

	// Text streams as it goes (a scan may be long); JSON collects pairs
	// into one object.
	var w *bufio.Writer
	if !s.json {
		w = bufio.NewWriter(s.out)
		defer w.Flush()
	}
	var pairs []map[string]any
	n := int64(0)
	more := false
	move := it.Next
	valid := it.First()
	if a.reverse {
		move, valid = it.Prev, it.Last()
	}
	for ; valid; valid = move() {
		if a.limit > 0 && n == int64(a.limit) {
			more = true
			break
		}
		if n%256 == 0 && s.ctx.Err() != nil {
			return result{}, errCancelled("scan", n)
		}
		k, v, err := it.KeyValue()
		if err != nil {
			return result{}, fmt.Errorf("scan: at key %s: %w", formatBytes(string(k), 64), err)
		}
		n++
		if w != nil {
			w.WriteString(formatBytes(string(k), s.limit))
			w.WriteByte(' ')
			w.WriteString(formatBytes(string(v), s.limit))
			w.WriteByte('\n')
		} else {
			p := map[string]any{"size": len(v)}
			setBytes(p, "key", string(k))
			setBytes(p, "value", string(v))
			pairs = append(pairs, p)
		}
	}
	if err := it.Error(); err != nil {
		return result{}, fmt.Errorf("scan: %w", err)
	}
	if pairs == nil {
		pairs = []map[string]any{}
	}
	res := result{fields: map[string]any{"count": n, "pairs": pairs, "more": more}}
	if s.interactive {
		res.text = fmt.Sprintf("(%d %s", n, plural(n, "key"))
		if more {
			res.text += ", more not shown: --limit"
		}
		res.text += ")"
	}
	return res, nil
}

func cmdCount(s *shell, args []word) (result, error) {
	a, err := parseScanArgs("count", args, false)
	if err != nil {
		return result{}, err
	}
	n, err := s.count(s.ctx, a.prefix)
	if err != nil {
		return result{}, err
	}
	return result{text: strconv.FormatInt(n, 10), fields: map[string]any{"count": n}}, nil
}

// count counts the keys with prefix, reading keys only.
func (s *shell) count(ctx context.Context, prefix []byte) (int64, error) {
	it, err := s.newIter(prefix)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := int64(0)
	for ok := it.First(); ok; ok = it.Next() {
		if n%1024 == 0 && ctx.Err() != nil {
			return 0, errCancelled("count", n)
		}
		n++
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	return n, nil
}

// plural returns word, with an s unless n is 1.
func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// Transactions.

func cmdBegin(s *shell, args []word) (result, error) {
	if s.txn != nil {
		return result{}, errors.New("begin: a transaction is already open; commit or rollback it first")
	}
	update := true
	if len(args) == 1 {
		switch strings.ToLower(args[0].text) {
		case "ro", "readonly", "read-only":
			update = false
		case "rw":
		default:
			return result{}, fmt.Errorf("begin: want ro or rw, not %s", formatBytes(args[0].text, 40))
		}
	}
	t, err := s.db.Begin(update)
	if err != nil {
		return result{}, err
	}
	s.txn, s.txnWrites, s.txnRO = t, 0, !update
	mode := "read-write"
	if !update {
		mode = "read-only"
	}
	return result{text: "BEGIN (" + mode + ")", fields: map[string]any{"readonly": !update}}, nil
}

func cmdCommit(s *shell, _ []word) (result, error) {
	if s.txn == nil {
		return result{}, errors.New("commit: no transaction is open (begin starts one)")
	}
	t, n := s.txn, s.txnWrites
	s.txn, s.txnWrites = nil, 0
	err := t.Commit()
	t.Rollback() // a no-op after Commit; ends the transaction if Commit failed
	if errors.Is(err, heapkv.ErrConflict) {
		return result{}, fmt.Errorf("commit: conflict: another commit since begin changed a key this transaction used; its %d writes were discarded (begin again to retry)", n)
	} else if err != nil {
		return result{}, fmt.Errorf("commit: %w (its %d writes were discarded)", err, n)
	}
	return result{text: fmt.Sprintf("COMMIT (%d writes)", n), fields: map[string]any{"writes": n}}, nil
}

func cmdRollback(s *shell, _ []word) (result, error) {
	if s.txn == nil {
		return result{}, errors.New("rollback: no transaction is open")
	}
	n := s.rollbackTxn()
	return result{text: fmt.Sprintf("ROLLBACK (%d writes discarded)", n), fields: map[string]any{"discarded": n}}, nil
}

// rollbackTxn ends the open transaction, discarding its writes, and returns
// how many writes it had.
func (s *shell) rollbackTxn() int {
	n := s.txnWrites
	s.txn.Rollback()
	s.txn, s.txnWrites = nil, 0
	return n
}
