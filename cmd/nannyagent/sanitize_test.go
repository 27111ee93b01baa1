package main

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	cases := []struct{ in, line, block string }{
		{"plain text", "plain text", "plain text"},
		{"clear\x1b[2Jscreen", `clear\x1b[2Jscreen`, `clear\x1b[2Jscreen`},
		{"title\x1b]0;pwned\x07", `title\x1b]0;pwned\x07`, `title\x1b]0;pwned\x07`},
		{"over\rwrite", `over\rwrite`, `over\rwrite`},
		{"two\nlines", `two\nlines`, "two\nlines"},
		{"a\tb", "a       b", "a       b"},
		{"ab\tc\nd\te", `ab      c\nd    e`, "ab      c\nd       e"},
		{"c1 \u009b31m csi", `c1 \u009b31m csi`, `c1 \u009b31m csi`},
		{"del\x7f", `del\x7f`, `del\x7f`},
		{"bidi \u202eevil\u202c", `bidi \u202eevil\u202c`, `bidi \u202eevil\u202c`},
		{"bad \xff utf8", "bad \uFFFD utf8", "bad \uFFFD utf8"},
		{"ünïcödé ✓ 日本", "ünïcödé ✓ 日本", "ünïcödé ✓ 日本"},
	}
	for _, c := range cases {
		if got := clean(c.in); got != c.line {
			t.Errorf("clean(%q) = %q, want %q", c.in, got, c.line)
		}
		if got := cleanBlock(c.in); got != c.block {
			t.Errorf("cleanBlock(%q) = %q, want %q", c.in, got, c.block)
		}
	}
}

func TestEscapeJSON(t *testing.T) {
	v := map[string]string{"s": "a\x1b[31m\u009b\u202e\x7fz"}
	data, _ := json.Marshal(v)
	out := escapeJSON(data)
	if !safe(string(out), false) {
		t.Errorf("unsafe runes left: %q", out)
	}
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil || back["s"] != v["s"] {
		t.Errorf("value changed: %v %q", err, back["s"])
	}
}

// Nothing a terminal acts on survives clean or cleanBlock (but newlines in
// a block), and escapeJSON keeps the document's value.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "x\x1b[2J", "\u009b1;31m", "a\tb\nc\rd", "\xff\xfe", "\u202e\u2066", "日本\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, out := range []string{clean(s), cleanBlock(s)} {
			if !utf8.ValidString(out) {
				t.Fatalf("invalid UTF-8 from %q: %q", s, out)
			}
		}
		for _, r := range clean(s) {
			if unsafeRune(r) {
				t.Fatalf("clean(%q) kept %U", s, r)
			}
		}
		for _, r := range cleanBlock(s) {
			if unsafeRune(r) && r != '\n' {
				t.Fatalf("cleanBlock(%q) kept %U", s, r)
			}
		}
		if strings.Count(clean(s), "\n") != 0 {
			t.Fatalf("clean(%q) has a newline", s)
		}
		data, err := json.Marshal(s)
		if err != nil {
			return
		}
		out := escapeJSON(data)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("escapeJSON broke %s: %v", data, err)
		}
		var want string
		_ = json.Unmarshal(data, &want)
		if back != want {
			t.Fatalf("escapeJSON changed %q to %q", want, back)
		}
		for _, r := range string(out) {
			if unsafeRune(r) {
				t.Fatalf("escapeJSON kept %U", r)
			}
		}
	})
}
