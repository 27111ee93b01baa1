package policy

import (
	"regexp"
	"testing"
)

// TestPatternMatchesWholeValue: a pattern compiled for memory (anchored at
// the start, leftmost-longest, the end checked by hand) accepts exactly
// what ^(?:pattern)$ accepts, alternations whose first branch is a prefix
// of the value included.
func TestPatternMatchesWholeValue(t *testing.T) {
	cases := []struct {
		pattern string
		in      []string
	}{
		{`a|ab`, []string{"a", "ab", "abc", "b", ""}},
		{`[a-z]{1,3}`, []string{"", "a", "abc", "abcd", "ab1"}},
		{`(no)?[a-z0-9._-]{1,32}`, []string{"nofoo", "no", "n", "NO", "x y"}},
		{`all|main|local|default|[a-z0-9_-]{1,32}`, []string{"all", "allx", "main2", "-", ""}},
		{`\^?[0-9]{1,7}`, []string{"^12", "12", "^", "^^1", "12345678"}},
		{`x*`, []string{"", "x", "xxxy", "yx"}},
		{`a$|ab`, []string{"a", "ab", "a\n"}},
	}
	for _, c := range cases {
		re, err := compilePattern(c.pattern, map[string]*regexp.Regexp{})
		if err != nil {
			t.Fatal(err)
		}
		want := regexp.MustCompile(`^(?:` + c.pattern + `)$`)
		for _, s := range c.in {
			if got := matchesWhole(re, s); got != want.MatchString(s) {
				t.Errorf("pattern %q, value %q: %v, ^(?:…)$ says %v", c.pattern, s, got, !got)
			}
		}
	}
}

// TestPatternsShared: a file that repeats a pattern compiles it once.
func TestPatternsShared(t *testing.T) {
	seen := map[string]*regexp.Regexp{}
	a, _ := compilePattern(`[a-z]{1,64}`, seen)
	b, _ := compilePattern(`[a-z]{1,64}`, seen)
	if a != b || len(seen) != 1 {
		t.Errorf("the same source compiled twice (%p, %p, %d)", a, b, len(seen))
	}
	for _, bad := range []string{`[a-`, `a)|(b`} {
		if _, err := compilePattern(bad, seen); err == nil {
			t.Errorf("pattern %q compiled", bad)
		}
	}
}

// FuzzPatternMatchesWholeValue holds the two forms equal on any pattern
// and value.
func FuzzPatternMatchesWholeValue(f *testing.F) {
	f.Add(`a|ab`, "ab")
	f.Add(`[ -~]{1,256}`, "hello world")
	f.Add(`(no)?[a-z0-9._-]{1,32}`, "nofoo")
	f.Add(`a$|ab`, "a")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if _, err := regexp.Compile(pattern); err != nil {
			return // refused on its own (and "a)|(b" must be)
		}
		want, err := regexp.Compile(`^(?:` + pattern + `)$`)
		if err != nil {
			return
		}
		re, err := compilePattern(pattern, map[string]*regexp.Regexp{})
		if err != nil {
			t.Fatalf("compiles anchored but not for matchesWhole: %v", err)
		}
		if got := matchesWhole(re, s); got != want.MatchString(s) {
			t.Errorf("pattern %q, value %q: %v, ^(?:…)$ says %v", pattern, s, got, !got)
		}
	})
}
