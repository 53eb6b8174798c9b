package main

import (
	"strings"
	"testing"
)

// show renders parsed statements compactly for comparison:
// statements joined by " | ", words by ",", each as kind:text.
func show(stmts [][]word) string {
	var parts []string
	for _, st := range stmts {
		var ws []string
		for _, w := range st {
			ws = append(ws, string("bqhf"[w.kind])+":"+w.text)
		}
		parts = append(parts, strings.Join(ws, ","))
	}
	return strings.Join(parts, " | ")
}

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      string // substring of the error, if one is expected
	}{
		{in: "", want: ""},
		{in: "   \t ", want: ""},
		{in: "get k", want: "b:get,b:k"},
		{in: "  put  k   v  ", want: "b:put,b:k,b:v"},
		{in: "put a 1; get a", want: "b:put,b:a,b:1 | b:get,b:a"},
		{in: "put a 1;get a;", want: "b:put,b:a,b:1 | b:get,b:a"},
		{in: ";;; ;", want: ""},
		{in: "a\nb\r\nc", want: "b:a | b:b | b:c"},
		{in: `put k "hello world"`, want: "b:put,b:k,q:hello world"},
		{in: `put k "a\nb\x00\"\\"`, want: "b:put,b:k,q:a\nb\x00\"\\"},
		{in: `put k "\u00e9\xff"`, want: "b:put,b:k,q:é\xff"},
		{in: `put k ""`, want: "b:put,b:k,q:"},
		{in: `put k 'a "b" \n'`, want: `b:put,b:k,q:a "b" \n`},
		{in: `put k ''`, want: "b:put,b:k,q:"},
		{in: `put "k;1" 'v;2'`, want: "b:put,q:k;1,q:v;2"},
		{in: "put k 0x00ff41", want: "b:put,b:k,h:\x00\xffA"},
		{in: "put k 0X0A", want: "b:put,b:k,h:\n"},
		{in: "put k 0x", want: "b:put,b:k,h:"},
		{in: "put k @data.bin", want: "b:put,b:k,f:data.bin"},
		{in: "put k v # a comment; get k", want: "b:put,b:k,b:v"},
		{in: "# whole line", want: ""},
		{in: "put a#b c", want: "b:put,b:a#b,b:c"},
		{in: "a # c1\nb", want: "b:a | b:b"},
		{in: "héllo wörld", want: "b:héllo,b:wörld"},
		{in: "put k \xff\xfe", want: "b:put,b:k,b:\xff\xfe"},

		{in: `put k "abc`, err: "column 7: unterminated double-quoted string"},
		{in: `put k "abc\"`, err: "unterminated double-quoted"},
		{in: "put k \"ab\nc\"", err: "unterminated double-quoted"},
		{in: `put k 'abc`, err: "column 7: unterminated single-quoted string"},
		{in: "put k 'ab\ncd'", err: "unterminated single-quoted"},
		{in: `put k "\q"`, err: "invalid escape"},
		{in: `put k "\xZZ"`, err: "invalid escape"},
		{in: "put k \"\xff\"", err: "invalid UTF-8"},
		{in: `put k "a"b`, err: "column 10: unexpected 'b' after closing quote"},
		{in: `put k 'a'b`, err: "after closing quote"},
		{in: `put k ab"c"`, err: "column 9: quote inside a word"},
		{in: `put it's x`, err: "quote inside a word"},
		{in: "put k 0xabc", err: "invalid hex"},
		{in: "put k 0xgg", err: "invalid hex"},
		{in: "put k @", err: "@ needs a file name"},
		{in: "get a; put k 'x", err: "unterminated"}, // one bad statement fails the line
	} {
		got, err := parseLine(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseLine(%q) error = %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseLine(%q): %v", tc.in, err)
			continue
		}
		if s := show(got); s != tc.want {
			t.Errorf("parseLine(%q) = %q, want %q", tc.in, s, tc.want)
		}
	}
}

func TestParseLineColumns(t *testing.T) {
	stmts, err := parseLine(`put  key "v"`)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{1, 6, 10} {
		if got := stmts[0][i].col; got != want {
			t.Errorf("word %d: col %d, want %d", i, got, want)
		}
	}
}

// FuzzParseLine checks that parseLine never panics, that what it accepts
// survives a round trip through formatBytes (the shell's output form), and
// that formatBytes output always parses back to the same bytes.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"", "get k", "put a 1; get a", `put k "a\nb\x00\"\\"`, `put k 'lit "x"'`,
		"put k 0x00ff", "put k 0x", "put k @file", "a # c\nb", `"unterminated`,
		`'x'y`, "0xabc", "\xff\xfe ;\n", `"\u00e9\U0001F600"`, "put k v;;;get k",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		// Any bytes, rendered and parsed back, are themselves.
		rendered := formatBytes(line, 0)
		back, err := parseLine(rendered)
		if err != nil {
			t.Fatalf("formatBytes(%q) = %s does not parse: %v", line, rendered, err)
		}
		if len(back) != 1 || len(back[0]) != 1 || back[0][0].text != line {
			t.Fatalf("formatBytes(%q) = %s parses to %q", line, rendered, show(back))
		}

		stmts, err := parseLine(line)
		if err != nil {
			if e, ok := err.(*parseError); !ok || e.col < 1 || e.col > len(line)+1 {
				t.Fatalf("parseLine(%q): error %v (%T) is not a parseError in range", line, err, err)
			}
			return
		}
		// Re-render every word (files as @path) and parse again.
		var b strings.Builder
		for _, st := range stmts {
			if len(st) == 0 {
				t.Fatalf("parseLine(%q) returned an empty statement", line)
			}
			for _, w := range st {
				if w.col < 1 || w.col > len(line) {
					t.Fatalf("parseLine(%q): word %q at column %d", line, w.text, w.col)
				}
				if w.kind == wordFile {
					b.WriteString("@" + w.text + " ")
				} else {
					b.WriteString(formatBytes(w.text, 0) + " ")
				}
			}
			b.WriteString("; ")
		}
		again, err := parseLine(b.String())
		if err != nil {
			t.Fatalf("re-rendered %q as %q, which does not parse: %v", line, b.String(), err)
		}
		if len(again) != len(stmts) {
			t.Fatalf("re-rendered %q: %d statements, want %d", line, len(again), len(stmts))
		}
		for i := range stmts {
			for j := range stmts[i] {
				if again[i][j].text != stmts[i][j].text {
					t.Fatalf("re-rendered %q: word %d.%d is %q, want %q", line, i, j, again[i][j].text, stmts[i][j].text)
				}
			}
		}
	})
}
