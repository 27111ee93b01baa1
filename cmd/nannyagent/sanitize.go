package main

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Text from the worker (the model's words, command output, error texts)
// may carry terminal control sequences: an escape that clears the screen,
// retitles the window, rewrites the line before it, or hides text behind
// right-to-left overrides. None of it reaches the terminal as is.

// unsafeRune reports a rune a terminal would act on or that reorders text:
// C0 controls, DEL, C1 controls (U+0080–U+009F: U+009B is a CSI on its
// own) and the bidirectional overrides and isolates.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	}
	return false
}

// clean makes one line safe to print: every unsafe rune, newlines
// included, becomes a visible escape (\x1b, \n, \u202e), a tab becomes
// spaces to the next 8-column stop, and invalid UTF-8 becomes U+FFFD.
func clean(s string) string { return sanitize(s, false) }

// cleanBlock is clean for multi-line text: newlines stay.
func cleanBlock(s string) string { return sanitize(s, true) }

func sanitize(s string, block bool) string {
	if safe(s, block) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	col := 0 // runes since the last newline, for tab stops
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		before := b.Len()
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
		case block && r == '\n':
			b.WriteRune(r)
			col = 0
			continue
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			n := 8 - col%8
			b.WriteString(strings.Repeat(" ", n))
			col += n
			continue
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80 && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		col += utf8.RuneCountInString(b.String()[before:])
	}
	return b.String()
}

func safe(s string, block bool) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if (r == utf8.RuneError && size == 1) || (unsafeRune(r) && !(block && r == '\n')) {
			return false
		}
	}
	return true
}

// escapeJSON rewrites, in encoded JSON, the runes encoding/json leaves raw
// that a terminal would act on (DEL, C1 controls, bidi overrides) as \u
// escapes. They can only occur inside strings, where \u escapes mean the
// same rune, so the document's value is unchanged.
func escapeJSON(data []byte) []byte {
	s := string(data)
	var b strings.Builder
	changed := false
	for _, r := range s {
		if r >= 0x20 && unsafeRune(r) {
			changed = true
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	if !changed {
		return data
	}
	return []byte(b.String())
}
