package policy

import (
	"regexp"
	"regexp/syntax"
)

// Operand patterns are compiled anchored at the start only and with
// leftmost-longest matching; a value is allowed when the match spans all
// of it. That is exactly ^(?:pattern)$ (the longest match from offset 0
// reaches the end whenever any does), but a pattern anchored at both ends
// is also compiled into a one-pass program, a second copy that costs
// several times the first: with the vendor policy's bounded repetitions
// ({1,256}) it was 2.3 MiB of the broker's 6 MiB heap.
func compilePattern(src string, seen map[string]*regexp.Regexp) (*regexp.Regexp, error) {
	if re, ok := seen[src]; ok {
		return re, nil
	}
	// On its own first: "a)|(b" would otherwise escape the group.
	if _, err := syntax.Parse(src, syntax.Perl); err != nil {
		return nil, err
	}
	re, err := regexp.Compile(`^(?:` + src + `)`)
	if err != nil {
		return nil, err
	}
	re.Longest()
	seen[src] = re
	return re, nil
}

// matchesWhole reports whether re, compiled by compilePattern, matches all
// of s.
func matchesWhole(re *regexp.Regexp, s string) bool {
	loc := re.FindStringIndex(s)
	return loc != nil && loc[0] == 0 && loc[1] == len(s)
}
