package redact

import (
	"bytes"
	"slices"
)

// Byte classes of the scan loop. Most bytes are plain and cost one table
// look-up; the others start a targeted check.
const (
	clsPlain   = iota
	clsNewline // a new line: reset per-line state
	clsEquals  // key=value
	clsColon   // key: value, "key": value, scheme://, user:$6$hash
	clsAt      // scheme://user:password@host
	clsDash    // -----BEGIN, --password value, -p value
	clsLess    // <password>SECRET</password>
	clsWord    // first letter of a token that names itself (eyJ, ghp_, AKIA, Bearer …)
)

// alnum holds [A-Za-z0-9].
var alnum = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		t[c] = 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
	}
	return t
}()

// ident holds the characters of an unquoted key: alnum and _ - .
var ident = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = alnum[c] || c == '_' || c == '-' || c == '.'
	}
	return t
}()

// class maps each byte to its class in the scan loop.
var class = func() (t [256]uint8) {
	t['\n'] = clsNewline
	t['='] = clsEquals
	t[':'] = clsColon
	t['@'] = clsAt
	t['-'] = clsDash
	t['<'] = clsLess
	for _, b := range []byte(tokenFirstLetters) {
		t[b] = clsWord
	}
	return t
}()

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isLetter(c byte) bool { return 'A' <= c&^0x20 && c&^0x20 <= 'Z' }

// span is a part of the input to replace by marker.
type span struct {
	start, end int
	marker     string
}

// scanner finds secrets in one input. It never writes to in.
type scanner struct {
	in    []byte
	spans []span

	lineStart    int // first byte of the current line
	contentStart int // first byte of the line after indentation and list, quote or diff marks
	schemeEnd    int // just after the last "://" on this line, or -1
	eol          int // the current line's end once looked up, or -1
	argvDone     int // command-line rules already ran up to here
}

// add records a secret to replace. Empty spans are ignored.
func (s *scanner) add(start, end int, marker string) {
	if start < end {
		s.spans = append(s.spans, span{start, end, marker})
	}
}

// scan walks the input once. Each handler returns the index to continue
// from, always past the byte it was called for. Handlers skip only what
// cannot hold another secret's label: a key block's body, a token's body.
func (s *scanner) scan() {
	in := s.in
	s.newLine(0)
	for i := 0; i < len(in); {
		c := class[in[i]]
		// The common cases first: a plain byte, or a letter inside a word.
		if c == clsPlain || c == clsWord && i > 0 && alnum[in[i-1]] {
			i++
			continue
		}
		switch c {
		case clsNewline:
			s.newLine(i + 1)
			i++
		case clsEquals:
			i = s.onEquals(i)
		case clsColon:
			i = s.onColon(i)
		case clsAt:
			i = s.onAt(i)
		case clsDash:
			i = s.onDash(i)
		case clsLess:
			i = s.onLess(i)
		default: // clsWord at the start of a word
			i = s.onWord(i)
		}
	}
}

// linePrefix holds the marks that may precede a YAML key or a header at the
// start of a line: indentation, YAML list dashes, comment hashes, the > and <
// of curl -v, the + and - of a diff.
var linePrefix = [256]bool{' ': true, '\t': true, '-': true, '#': true, '>': true, '<': true, '*': true, '+': true}

func (s *scanner) newLine(at int) {
	s.lineStart = at
	s.schemeEnd = -1
	s.eol = -1
	q := at
	for q < len(s.in) && q-at < 32 && linePrefix[s.in[q]] {
		q++
	}
	s.contentStart = q
	if q < len(s.in) && directiveFirst[s.in[q]] {
		s.lineDirective(q)
	}
}

// lineEnd returns the index of the newline that ends the current line, or
// the input's length. at is a position on the current line; the answer is
// kept, so long lines with many candidates are searched once.
func (s *scanner) lineEnd(at int) int {
	if s.eol >= at {
		return s.eol
	}
	s.eol = len(s.in)
	if at < len(s.in) {
		if e := bytes.IndexByte(s.in[at:], '\n'); e >= 0 {
			s.eol = at + e
		}
	}
	return s.eol
}

// rewrite builds the output: the input with every span replaced. Overlapping
// spans merge into one marker.
func (s *scanner) rewrite() []byte {
	spans := s.spans
	slices.SortStableFunc(spans, func(a, b span) int { return a.start - b.start })
	merged := spans[:1]
	for _, sp := range spans[1:] {
		last := &merged[len(merged)-1]
		if sp.start < last.end {
			last.end = max(last.end, sp.end)
			continue
		}
		merged = append(merged, sp)
	}
	size := len(s.in)
	for _, sp := range merged {
		size += len(sp.marker) - (sp.end - sp.start)
	}
	out := make([]byte, 0, max(size, 0))
	at := 0
	for _, sp := range merged {
		out = append(out, s.in[at:sp.start]...)
		out = append(out, sp.marker...)
		at = sp.end
	}
	return append(out, s.in[at:]...)
}
