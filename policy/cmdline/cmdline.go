// Package cmdline parses the command lines a model writes into pipeline
// stages (argv vectors and the few redirections allowed), refusing every
// other shell feature with a reason the model can act on. It is the part
// of the policy the worker needs: no YAML and no evaluator, so the
// unprivileged process links neither.
package cmdline

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Stage is one process of a pipeline and its accepted redirections. It
// mirrors brokerv1.Stage.
type Stage struct {
	// Argv[0] is the program as written: a bare name or an absolute path.
	Argv []string `json:"argv"`
	// StdoutToNull: ">/dev/null".
	StdoutToNull bool `json:"stdout_to_null,omitempty"`
	// StderrToNull: "2>/dev/null" (or ">/dev/null 2>&1").
	StderrToNull bool `json:"stderr_to_null,omitempty"`
	// StderrToStdout: "2>&1" while stdout still went to the stage's output
	// (the next stage, or the captured output). Stderr joins that output
	// even when StdoutToNull is set afterwards ("2>&1 >/dev/null"). Never
	// set together with StderrToNull.
	StderrToStdout bool `json:"stderr_to_stdout,omitempty"`
}

// MaxLine bounds the text Parse reads.
const MaxLine = 64 << 10

// maxParsedStages bounds the stages one line may produce before the
// policy applies its own limit.
const maxParsedStages = 64

// SyntaxError is a command line Parse refuses: the offending
// token, its byte offset, and a reason written for a model to act on.
type SyntaxError struct {
	Offset int    `json:"offset"`
	Token  string `json:"token"`
	Reason string `json:"reason"`
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("denied: %q at offset %d: %s", e.Token, e.Offset, e.Reason)
}

// cmdParser turns one line into stages. It implements the part of POSIX
// shell quoting a diagnostic command needs (single quotes, double quotes,
// backslash, |) and refuses every other shell feature, because nothing
// runs the line through a shell: a feature we do not refuse would mean
// something different to the model than to the broker.
type cmdParser struct {
	s      string
	i      int
	stages []Stage
	cur    Stage
	word   []byte
	// inWord is set once a word has started (even an empty quoted one).
	inWord    bool
	wordStart int
	// digitsOnly: the word so far is unquoted digits (a file descriptor
	// number if a redirection follows).
	digitsOnly bool
	// plain: nothing in the word so far was quoted or escaped.
	plain bool
	// assign: the word starts with an unquoted NAME= (an environment
	// assignment if it is the first word).
	assign bool
	// stdout and stderr are where the stage's streams go.
	stdout, stderr streamTarget
}

type streamTarget uint8

const (
	toDefault streamTarget = iota // stdout: the pipe/capture; stderr: stderr
	toNull
	toOut // stderr only: the stage's original stdout
)

// Parse splits a command line into pipeline stages. It accepts
// words with '…', "…" and backslash quoting, "|" between stages, and the
// redirections 2>/dev/null, >/dev/null and 2>&1. Anything else a shell
// would interpret (;, &&, ||, &, >, <, $…, `…`, ~, globs, ( ), { }, #
// comments, newlines, VAR=value prefixes) is refused with a *SyntaxError
// naming the token and its byte offset. A program name must be plain ASCII.
func Parse(s string) ([]Stage, error) {
	if len(s) > MaxLine {
		return nil, &SyntaxError{Offset: MaxLine, Token: "…", Reason: fmt.Sprintf("the command line is longer than %d bytes", MaxLine)}
	}
	p := &cmdParser{s: s}
	if err := p.run(); err != nil {
		return nil, err
	}
	return p.stages, nil
}

func (p *cmdParser) fail(off int, tok, reason string) error {
	return &SyntaxError{Offset: off, Token: tok, Reason: reason}
}

func (p *cmdParser) startWord() {
	if !p.inWord {
		p.inWord = true
		p.wordStart = p.i
		p.digitsOnly = true
		p.plain = true
		p.assign = false
		p.word = p.word[:0]
	}
}

func (p *cmdParser) endWord() error {
	if !p.inWord {
		return nil
	}
	p.inWord = false
	w := string(p.word)
	if len(p.cur.Argv) == 0 {
		if p.assign {
			return p.fail(p.wordStart, w, "environment assignments (NAME=value before a command) are not supported; the broker runs commands with a fixed environment")
		}
		if w == "" {
			return p.fail(p.wordStart, p.s[p.wordStart:p.i], "empty program name")
		}
		if !IsPlainASCII(w) {
			return p.fail(p.wordStart, w, "a program name must be plain ASCII (look-alike characters are refused)")
		}
	}
	p.cur.Argv = append(p.cur.Argv, w)
	return nil
}

func (p *cmdParser) endStage(off int, tok string) error {
	if err := p.endWord(); err != nil {
		return err
	}
	if len(p.cur.Argv) == 0 {
		return p.fail(off, tok, "empty pipeline stage: put a command on each side of |")
	}
	p.cur.StdoutToNull = p.stdout == toNull
	p.cur.StderrToNull = p.stderr == toNull
	p.cur.StderrToStdout = p.stderr == toOut
	p.stages = append(p.stages, p.cur)
	if len(p.stages) > maxParsedStages {
		return p.fail(off, tok, "too many pipeline stages")
	}
	p.cur = Stage{}
	p.stdout, p.stderr = toDefault, toDefault
	return nil
}

func (p *cmdParser) run() error {
	s := p.s
	for p.i < len(s) {
		c := s[p.i]
		switch {
		case c == ' ' || c == '\t':
			if err := p.endWord(); err != nil {
				return err
			}
			p.i++
		case c == '\n' || c == '\r':
			return p.fail(p.i, string(c), "a newline separates commands; send one command (or one pipeline) per request")
		case c < 0x20 || c == 0x7f:
			return p.fail(p.i, string(c), "control characters are not allowed")
		case c == '\'':
			if err := p.singleQuoted(); err != nil {
				return err
			}
		case c == '"':
			if err := p.doubleQuoted(); err != nil {
				return err
			}
		case c == '\\':
			if err := p.backslash(); err != nil {
				return err
			}
		case c == '|':
			if err := p.pipe(); err != nil {
				return err
			}
		case c == '>':
			if err := p.redirect(); err != nil {
				return err
			}
		case c >= utf8.RuneSelf:
			if err := p.nonASCII(); err != nil {
				return err
			}
		default:
			if reason, tok := p.special(c); reason != "" {
				return p.fail(p.i, tok, reason)
			}
			p.startWord()
			if c < '0' || c > '9' {
				p.digitsOnly = false
			}
			if c == '=' && p.plain && !p.assign && len(p.cur.Argv) == 0 && isName(p.word) {
				p.assign = true
			}
			p.word = append(p.word, c)
			p.i++
		}
	}
	if len(p.stages) == 0 && len(p.cur.Argv) == 0 && !p.inWord {
		if p.stdout != toDefault || p.stderr != toDefault {
			return p.fail(0, s, "a redirection needs a command")
		}
		return p.fail(0, s, "empty command")
	}
	return p.endStage(len(s), "")
}

func isName(w []byte) bool {
	if len(w) == 0 || !(isAlpha(w[0]) || w[0] == '_') {
		return false
	}
	for _, c := range w {
		if !(isAlnum(c) || c == '_') {
			return false
		}
	}
	return true
}

// special explains why an unquoted character is refused, or returns "".
func (p *cmdParser) special(c byte) (string, string) {
	s, i := p.s, p.i
	next := byte(0)
	if i+1 < len(s) {
		next = s[i+1]
	}
	switch c {
	case ';':
		return "command chaining is not supported; send each command separately", ";"
	case '&':
		if next == '&' {
			return "command chaining is not supported; send each command separately", "&&"
		}
		if next == '>' {
			return "only 2>/dev/null, >/dev/null and 2>&1 are supported", "&>"
		}
		return "background jobs are not supported; commands run in the foreground with a time limit", "&"
	case '<':
		if next == '<' {
			return "here-documents and here-strings are not supported; commands get no input", "<<"
		}
		if next == '(' {
			return "process substitution is not supported", "<("
		}
		return "input redirection is not supported; pass the file as an argument", "<"
	case '$':
		switch next {
		case '(':
			return "command substitution is not supported; run the inner command on its own first", "$("
		case '{':
			return "variable expansion is not supported; write the value itself", "${"
		case '\'':
			return "$'…' quoting is not supported; use single quotes", "$'"
		}
		return "variable expansion is not supported; write the value itself (quote a literal $ with single quotes)", "$"
	case '`':
		return "command substitution is not supported; run the inner command on its own first", "`"
	case '(', ')':
		return "subshells and grouping are not supported; send one pipeline", string(c)
	case '{', '}':
		return "brace expansion and { } groups are not supported; write each argument out (or quote the braces)", string(c)
	case '*', '?', '[':
		return "unquoted glob: nothing expands wildcards here; name the file, or quote the pattern if the tool should see it (e.g. -name '*.log')", string(c)
	case '~':
		return "~ is not expanded here; write the absolute path (e.g. /root/...)", "~"
	case '#':
		if !p.inWord {
			return "comments are not supported", "#"
		}
	case '!':
		if !p.inWord && len(p.cur.Argv) == 0 {
			return "pipeline negation is not supported", "!"
		}
	}
	return "", ""
}

func (p *cmdParser) singleQuoted() error {
	open := p.i
	p.startWord()
	p.digitsOnly, p.plain = false, false
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '\'':
			p.i++
			return nil
		case c == '\n' || c == '\r':
			return p.fail(p.i, string(c), "newlines are not allowed, even inside quotes; send one command per request")
		case c < 0x20 || c == 0x7f:
			return p.fail(p.i, string(c), "control characters are not allowed")
		case c >= utf8.RuneSelf:
			if err := p.quotedRune(); err != nil {
				return err
			}
		default:
			p.word = append(p.word, c)
			p.i++
		}
	}
	return p.fail(open, "'", "unterminated single quote")
}

func (p *cmdParser) doubleQuoted() error {
	open := p.i
	p.startWord()
	p.digitsOnly, p.plain = false, false
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return nil
		case c == '\\':
			if p.i+1 < len(p.s) {
				switch n := p.s[p.i+1]; n {
				case '$', '`', '"', '\\':
					p.word = append(p.word, n)
					p.i += 2
					continue
				case '\n', '\r':
					return p.fail(p.i+1, string(n), "newlines are not allowed; send one command per request")
				}
			}
			p.word = append(p.word, c)
			p.i++
		case c == '$':
			return p.fail(p.i, "$", "variable expansion is not supported, even inside double quotes; use single quotes for a literal $")
		case c == '`':
			return p.fail(p.i, "`", "command substitution is not supported, even inside double quotes")
		case c == '\n' || c == '\r':
			return p.fail(p.i, string(c), "newlines are not allowed, even inside quotes; send one command per request")
		case c < 0x20 || c == 0x7f:
			return p.fail(p.i, string(c), "control characters are not allowed")
		case c >= utf8.RuneSelf:
			if err := p.quotedRune(); err != nil {
				return err
			}
		default:
			p.word = append(p.word, c)
			p.i++
		}
	}
	return p.fail(open, `"`, "unterminated double quote")
}

func (p *cmdParser) backslash() error {
	if p.i+1 >= len(p.s) {
		return p.fail(p.i, `\`, "a trailing backslash escapes nothing")
	}
	n := p.s[p.i+1]
	switch {
	case n == '\n' || n == '\r':
		return p.fail(p.i+1, string(n), "line continuations are not supported; send the command on one line")
	case n < 0x20 || n == 0x7f:
		return p.fail(p.i+1, string(n), "control characters are not allowed")
	}
	p.startWord()
	p.digitsOnly, p.plain = false, false
	p.i++
	if n >= utf8.RuneSelf {
		return p.quotedRune()
	}
	p.word = append(p.word, n)
	p.i++
	return nil
}

// quotedRune copies one non-ASCII rune, refusing invisible ones.
func (p *cmdParser) quotedRune() error {
	r, size := utf8.DecodeRuneInString(p.s[p.i:])
	if r == utf8.RuneError && size == 1 {
		return p.fail(p.i, p.s[p.i:p.i+1], "invalid UTF-8")
	}
	if reason := BadRune(r); reason != "" {
		return p.fail(p.i, string(r), fmt.Sprintf("%s (U+%04X) is not allowed", reason, r))
	}
	p.word = append(p.word, p.s[p.i:p.i+size]...)
	p.i += size
	return nil
}

func (p *cmdParser) nonASCII() error {
	p.startWord()
	p.digitsOnly, p.plain = false, false
	return p.quotedRune()
}

func (p *cmdParser) pipe() error {
	off := p.i
	if off+1 < len(p.s) {
		switch p.s[off+1] {
		case '|':
			return p.fail(off, "||", "command chaining is not supported; send each command separately")
		case '&':
			return p.fail(off, "|&", "|& is not supported; write 2>&1 | instead")
		}
	}
	if err := p.endStage(off, "|"); err != nil {
		return err
	}
	p.i++
	return nil
}

// redirect accepts >/dev/null, 2>/dev/null and 2>&1 (also with blanks
// before /dev/null) and applies them in order, as a shell would.
func (p *cmdParser) redirect() error {
	off := p.i
	fd := 1
	if p.inWord {
		if p.digitsOnly {
			w := string(p.word)
			switch w {
			case "1":
				fd = 1
			case "2":
				fd = 2
			default:
				return p.fail(p.wordStart, w+">", "only 2>/dev/null, >/dev/null and 2>&1 are supported")
			}
			off = p.wordStart
			p.inWord = false
		} else if err := p.endWord(); err != nil {
			return err
		}
	}
	s := p.s
	j := p.i + 1
	if j < len(s) {
		switch s[j] {
		case '>':
			return p.fail(off, s[off:j+1], "appending to files is not allowed; commands cannot write files")
		case '|':
			return p.fail(off, s[off:j+1], "writing files is not allowed")
		case '&':
			if fd == 2 && j+1 < len(s) && s[j+1] == '1' && (j+2 == len(s) || isMeta(s[j+2])) {
				if p.stdout == toNull {
					p.stderr = toNull
				} else {
					p.stderr = toOut
				}
				p.i = j + 2
				return nil
			}
			end := j + 2
			if end > len(s) {
				end = len(s)
			}
			return p.fail(off, s[off:end], "only 2>&1 is supported among descriptor duplications")
		}
	}
	for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
		j++
	}
	const null = "/dev/null"
	if strings.HasPrefix(s[j:], null) && (j+len(null) == len(s) || isMeta(s[j+len(null)])) {
		if fd == 1 {
			p.stdout = toNull
		} else {
			p.stderr = toNull
		}
		p.i = j + len(null)
		return nil
	}
	end := j
	for end < len(s) && !isMeta(s[end]) {
		end++
	}
	target := s[j:end]
	if target == "" {
		return p.fail(off, s[off:j], "a redirection needs a target; only /dev/null is allowed")
	}
	return p.fail(off, s[off:end], fmt.Sprintf("redirection to %s: writing files is not allowed; only >/dev/null, 2>/dev/null and 2>&1 are supported", target))
}

// isMeta reports whether c ends an unquoted word.
func isMeta(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '|', '&', ';', '<', '>', '(', ')':
		return true
	}
	return false
}

// BadRune explains why a non-ASCII rune may not appear in an argument:
// it refuses non-ASCII runes that hide or fake text.
func BadRune(r rune) string {
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

// IsPlainASCII reports whether s is printable ASCII without spaces: what a
// program name must be, so no homoglyph can pass for a listed name.
func IsPlainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool { return isAlpha(c) || c >= '0' && c <= '9' }
