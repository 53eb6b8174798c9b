package main

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// wordKind says how a word was written, which decides what it may stand for.
type wordKind uint8

const (
	wordBare   wordKind = iota // plain text up to a blank, ';' or newline
	wordQuoted                 // "double-quoted" (Go escapes) or 'single-quoted' (literal)
	wordHex                    // 0x…: the bytes the hex digits spell
	wordFile                   // @path: a value read from a file; text is the path
)

// word is one argument of a statement.
type word struct {
	kind wordKind
	text string // the bytes the word stands for (for wordFile, the path)
	col  int    // 1-based byte column where the word starts
}

// parseError is a syntax error in a line, with the column it was found at.
type parseError struct {
	col int
	msg string
}

func (e *parseError) Error() string { return fmt.Sprintf("column %d: %s", e.col, e.msg) }

func errAt(i int, format string, args ...any) error {
	return &parseError{col: i + 1, msg: fmt.Sprintf(format, args...)}
}

// parseLine splits line into statements, each a non-empty list of words.
// Statements end at an unquoted ';' or newline; a '#' that starts a word
// comments out the rest of the line. Words are separated by blanks and take
// one of these forms:
//
//	bare        any run of bytes without blanks, quotes, ';' or newline
//	"text"      Go string-literal escapes: \n \t \\ \" \x00 \u00e9 ...
//	'text'      taken literally, no escapes
//	0x68690a    hex digits, an even number of them ("0x" alone is empty)
//	@path       a value read from the file at path
//
// A quote may not appear inside a bare word, and a quoted word must be
// followed by a blank, ';', newline or the end.
func parseLine(line string) ([][]word, error) {
	var stmts [][]word
	var cur []word
	for i := 0; i < len(line); {
		switch c := line[i]; c {
		case ' ', '\t', '\r', '\v', '\f':
			i++
		case ';', '\n':
			if len(cur) > 0 {
				stmts, cur = append(stmts, cur), nil
			}
			i++
		case '#':
			if j := strings.IndexByte(line[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = len(line)
			}
		default:
			w, next, err := scanWord(line, i)
			if err != nil {
				return nil, err
			}
			cur = append(cur, w)
			i = next
		}
	}
	if len(cur) > 0 {
		stmts = append(stmts, cur)
	}
	return stmts, nil
}

// isBreak reports whether c ends a word.
func isBreak(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\v', '\f', ';', '\n':
		return true
	}
	return false
}

// scanWord reads the word that starts at line[i], returning it and the
// index just past it.
func scanWord(line string, i int) (word, int, error) {
	switch line[i] {
	case '"':
		j := i + 1
		for ; j < len(line) && line[j] != '"'; j++ {
			if line[j] == '\n' {
				break
			}
			if line[j] == '\\' {
				j++
			}
		}
		if j >= len(line) || line[j] != '"' {
			return word{}, 0, errAt(i, "unterminated double-quoted string")
		}
		lit := line[i : j+1]
		if !utf8.ValidString(lit) {
			return word{}, 0, errAt(i, `invalid UTF-8 in a double-quoted string (write such bytes as \xNN)`)
		}
		s, err := strconv.Unquote(lit)
		if err != nil {
			return word{}, 0, errAt(i, "invalid escape in double-quoted string %s", lit)
		}
		return afterQuote(line, j+1, word{kind: wordQuoted, text: s, col: i + 1})
	case '\'':
		j := strings.IndexAny(line[i+1:], "'\n")
		if j < 0 || line[i+1+j] != '\'' {
			return word{}, 0, errAt(i, "unterminated single-quoted string")
		}
		end := i + 1 + j
		return afterQuote(line, end+1, word{kind: wordQuoted, text: line[i+1 : end], col: i + 1})
	}
	j := i
	for j < len(line) && !isBreak(line[j]) {
		if line[j] == '"' || line[j] == '\'' {
			return word{}, 0, errAt(j, "quote inside a word; quote the whole word instead")
		}
		j++
	}
	s := line[i:j]
	switch {
	case s[0] == '@':
		if len(s) == 1 {
			return word{}, 0, errAt(i, "@ needs a file name, as in @value.bin")
		}
		return word{kind: wordFile, text: s[1:], col: i + 1}, j, nil
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		b, err := hex.DecodeString(s[2:])
		if err != nil {
			return word{}, 0, errAt(i, "invalid hex %q: want an even number of hex digits after 0x (quote it for the literal text)", s)
		}
		return word{kind: wordHex, text: string(b), col: i + 1}, j, nil
	}
	return word{kind: wordBare, text: s, col: i + 1}, j, nil
}

// afterQuote checks that a quoted word ends at a word break.
func afterQuote(line string, j int, w word) (word, int, error) {
	if j < len(line) && !isBreak(line[j]) {
		return word{}, 0, errAt(j, "unexpected %q after closing quote; put a blank between words", line[j])
	}
	return w, j, nil
}
