package policy

import (
	"fmt"
	"unicode/utf8"

	"github.com/nannyai/nannyagent/policy/cmdline"
)

// badArgRune explains why s cannot be an argument, or returns "". Arguments
// are valid UTF-8 without NUL, control characters, or invisible format
// characters (bidirectional overrides, zero-width spaces): text a reviewer
// reads in a log must be the text the program receives.
func badArgRune(s string) string {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				if c == 0 {
					return fmt.Sprintf("NUL byte at offset %d", i)
				}
				return fmt.Sprintf("control character %#02x at offset %d", c, i)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return fmt.Sprintf("invalid UTF-8 at offset %d", i)
		}
		if reason := badRune(r); reason != "" {
			return fmt.Sprintf("%s (U+%04X) at offset %d", reason, r, i)
		}
		i += size
	}
	return ""
}

// badRune refuses non-ASCII runes that hide or fake text (cmdline.BadRune).
func badRune(r rune) string { return cmdline.BadRune(r) }

// isPlainASCII reports whether s is printable ASCII without spaces: what a
// program name must be (cmdline.IsPlainASCII).
func isPlainASCII(s string) bool { return cmdline.IsPlainASCII(s) }
