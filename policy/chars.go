package policy

import (
	"fmt"
	"unicode"
	"unicode/utf8"
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

// badRune refuses non-ASCII runes that hide or fake text.
func badRune(r rune) string {
	switch {
	case unicode.IsControl(r):
		return "control character"
	case unicode.Is(unicode.Cf, r):
		return "invisible formatting character"
	case unicode.IsSpace(r):
		return "non-ASCII space"
	case r == utf8.RuneError:
		return "replacement character"
	}
	return ""
}

// isPlainASCII reports whether s is printable ASCII without spaces: what a
// program name must be, so no homoglyph can pass for a listed name.
func isPlainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
