package main

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// isText reports whether b reads well as text: valid UTF-8 whose runes are
// all printable or common white space.
func isText(b string) bool {
	if !utf8.ValidString(b) {
		return false
	}
	for _, r := range b {
		if !unicode.IsPrint(r) && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
	}
	return true
}

// formatBytes renders a key or value for a person: text as a Go-quoted
// string, anything else as 0x-prefixed hex. Past limit bytes (limit > 0) it
// shows a prefix and notes the total size. Untruncated, the result parses
// back (see parseLine) to exactly b, so output can be pasted as input.
func formatBytes(b string, limit int) string {
	shown, cut := b, false
	if limit > 0 && len(b) > limit {
		shown, cut = b[:limit], true
	}
	var s string
	if isText(b) {
		if cut {
			for len(shown) > 0 && !utf8.ValidString(shown) { // don't split a rune
				shown = shown[:len(shown)-1]
			}
		}
		s = strconv.Quote(shown)
	} else {
		s = "0x" + hex.EncodeToString([]byte(shown))
	}
	if cut {
		s += fmt.Sprintf("... (%d of %d bytes shown)", len(shown), len(b))
	}
	return s
}

// setBytes stores b in a JSON object under name when it is valid UTF-8,
// else as hex under name+"_hex".
func setBytes(m map[string]any, name, b string) {
	if utf8.ValidString(b) {
		m[name] = b
	} else {
		m[name+"_hex"] = hex.EncodeToString([]byte(b))
	}
}

// humanBytes renders n for a person: "84 B", "4.2 KiB", "8.0 MiB".
func humanBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[u])
}

// errText renders err for the "error:" line, dropping the package prefix
// that every heapkv error carries.
func errText(err error) string {
	s := strings.TrimPrefix(err.Error(), "heapkv: ")
	return strings.ReplaceAll(s, ": heapkv: ", ": ")
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
