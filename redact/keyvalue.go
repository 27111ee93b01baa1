package redact

import (
	"bytes"
	"strings"
)

// form says how a labelled value is written, which decides where it ends.
type form uint8

const (
	formInline form = iota // key=value (env, logfmt, URL query, mount options): up to a blank, quote, & or ;
	formSpaced             // key = value (ini, keyrings): the rest of the line
	formLine               // key: value at the start of a line (YAML, HTTP headers): the rest of the line
	formQuoted             // "key": value (JSON, Python dicts): a string, or up to , } ]
	formHeader             // Authorization: scheme credentials, in the middle of a line
)

// keyRef is the key found before a separator.
type keyRef struct {
	start, end int  // the key's text (inside its quotes, if quoted)
	quote      byte // the quote around the key, or 0
	spaced     bool // blanks between the key and the separator
}

// keyBefore finds the key that ends just before the separator at sep.
func (s *scanner) keyBefore(sep int) (keyRef, bool) {
	in, lo := s.in, s.lineStart
	var k keyRef
	j := sep
	for j > lo && sep-j < 8 && isBlank(in[j-1]) {
		j--
	}
	k.spaced = j < sep
	if j > lo && (in[j-1] == '"' || in[j-1] == '\'') {
		return s.quotedKeyBefore(j-1, k)
	}
	start := j
	for start > lo && j-start < maxKey && ident[in[start-1]] {
		start--
	}
	k.start, k.end = start, j
	return k, start < j
}

// quotedKeyStop ends the backward search for a quoted key's opening quote.
// Keys hold none of these; meeting one means the quote closed something else
// (or a marker sits inside, which must not turn into a key on a second pass).
var quotedKeyStop = [256]bool{'"': true, '\'': true, '\\': true, ':': true, '[': true, ']': true, '{': true, '}': true, ',': true, '\n': true}

// quotedKeyBefore reads a quoted key whose closing quote is at closing. The
// quotes may be escaped (\"key\"), as in JSON inside a JSON string.
func (s *scanner) quotedKeyBefore(closing int, k keyRef) (keyRef, bool) {
	in, lo := s.in, s.lineStart
	q := in[closing]
	end := closing
	escaped := end > lo && in[end-1] == '\\'
	if escaped {
		end--
	}
	start := end
	for start > lo && end-start <= 2*maxKey && !quotedKeyStop[in[start-1]] {
		start--
	}
	if start == lo || in[start-1] != q || start == end {
		return k, false
	}
	if escaped && (start < lo+2 || in[start-2] != '\\') {
		return k, false
	}
	k.start, k.end, k.quote = start, end, q
	return k, true
}

// onEquals handles key=value, key = value and "key"="value".
func (s *scanner) onEquals(i int) int {
	in := s.in
	if i+1 < len(in) && in[i+1] == '=' {
		return i + 2 // ==, a comparison or base64 padding
	}
	if i > s.lineStart && strings.IndexByte("!<>=:", in[i-1]) >= 0 {
		return i + 1 // !=, <=, >=; := is handled at its colon
	}
	k, ok := s.keyBefore(i)
	if !ok {
		return i + 1
	}
	class := classifyKey(in[k.start:k.end])
	if class == keyPlain {
		return i + 1
	}
	f := formInline
	switch {
	case k.quote != 0:
		f = formQuoted
	case k.spaced:
		f = formSpaced
	}
	return s.redactValue(i, i+1, f, class, k)
}

// onColon handles key: value at the start of a line, "key": value anywhere,
// Authorization: headers anywhere, and notes where URLs begin.
func (s *scanner) onColon(i int) int {
	in := s.in
	if i+2 < len(in) && in[i+1] == '/' && in[i+2] == '/' {
		s.schemeEnd = i + 3
		return i + 3
	}
	if bytes.HasPrefix(in[i+1:], []byte(`\/\/`)) {
		s.schemeEnd = i + 5 // https:\/\/ in JSON written by PHP and others
		return i + 5
	}
	if i > s.lineStart && i+1 < len(in) && isDigit(in[i-1]) && isDigit(in[i+1]) {
		return i + 1 // 10:15:42, 0:00, 1:9.2p1: times and versions
	}
	if i+1 < len(in) {
		switch in[i+1] {
		case ':':
			return i + 2 // IPv6, C++ and Perl scopes
		case '=':
			return s.onAssign(i)
		case '$', '!':
			if end, ok := s.cryptHash(i + 1); ok {
				return end
			}
		}
	}
	k, ok := s.keyBefore(i)
	if !ok {
		return i + 1
	}
	f := formQuoted
	if k.quote == 0 {
		f, ok = s.colonForm(&k)
		if !ok {
			return i + 1
		}
	}
	class := classifyKey(in[k.start:k.end])
	if class == keyPlain {
		return i + 1
	}
	return s.redactValue(i, i+1, f, class, k)
}

// onAssign handles key := value.
func (s *scanner) onAssign(i int) int {
	k, ok := s.keyBefore(i)
	if !ok {
		return i + 2
	}
	class := classifyKey(s.in[k.start:k.end])
	if class == keyPlain {
		return i + 2
	}
	return s.redactValue(i+1, i+2, formSpaced, class, k)
}

// colonForm decides whether an unquoted key before a colon labels a value.
// Only keys that start a line do (YAML, headers, "Client Secret: …"), and
// Authorization headers anywhere: in prose, "failed to refresh token: status
// 401" is a message, not a label.
func (s *scanner) colonForm(k *keyRef) (form, bool) {
	in := s.in
	if k.start == s.contentStart {
		return formLine, true
	}
	if isAuthHeader(in[k.start:k.end]) {
		return formHeader, true
	}
	// A short phrase of at most three words at the start of a line.
	if k.start < s.contentStart || k.end-s.contentStart > 48 {
		return 0, false
	}
	words := 1
	for p := s.contentStart; p <= k.start; p++ {
		c := in[p]
		if !ident[c] && c != ' ' && c != '\t' {
			return 0, false
		}
		if p > s.contentStart && ident[c] && (in[p-1] == ' ' || in[p-1] == '\t') {
			words++
		}
	}
	if words > 3 {
		return 0, false
	}
	k.start = s.contentStart
	return formLine, true
}

func isAuthHeader(key []byte) bool {
	return bytes.EqualFold(key, []byte("authorization")) || bytes.EqualFold(key, []byte("proxy-authorization"))
}

// redactValue finds the value after the separator at sep (the value may
// start at from), and records it if it is a secret. Scanning goes on just
// after the separator, inside the value: a key there may label a secret that
// runs past the value's end ("--auth x\"token\": \"SECRET\"").
func (s *scanner) redactValue(sep, from int, f form, class keyClass, k keyRef) int {
	start, end, delimited := s.valueExtent(from, f, k)
	start, end = skipScheme(s.in, start, end, f == formHeader && !delimited)
	if isSecretValue(s.in[start:end], class) {
		s.add(start, end, Marker)
	}
	return sep + 1
}

// inlineStop ends an unquoted key=value value.
var inlineStop = [256]bool{' ': true, '\t': true, '\r': true, '\n': true, '"': true, '\'': true, '\\': true, '&': true, ';': true}

// jsonStop ends an unquoted JSON value.
var jsonStop = [256]bool{' ': true, '\t': true, '\r': true, '\n': true, ',': true, '}': true, ']': true, '\\': true}

// valueExtent returns the value that begins at v, written in form f, and
// whether quotes delimit it.
func (s *scanner) valueExtent(v int, f form, k keyRef) (int, int, bool) {
	in := s.in
	eol := s.lineEnd(v)
	if f != formInline {
		for v < eol && isBlank(in[v]) {
			v++
		}
	}
	if v >= eol {
		return v, v, false
	}
	switch {
	case in[v] == '"' || in[v] == '\'':
		start, end := quotedValue(in, v, eol)
		return start, end, true
	case in[v] == '\\' && v+1 < eol && in[v+1] == '"':
		start := v + 2
		if e := bytes.Index(in[start:eol], []byte(`\"`)); e >= 0 {
			return start, start + e, true
		}
		return start, trimRight(in, start, eol), true
	}
	switch f {
	case formInline:
		e := v
		for e < eol && !inlineStop[in[e]] {
			e++
		}
		return v, e, false
	case formQuoted:
		e := v
		for e < eol && !jsonStop[in[e]] {
			e++
		}
		return v, e, false
	case formHeader:
		// Up to the quote that opened the header ("-H 'Authorization: …'"),
		// else to the end of the line; skipScheme keeps only one word.
		if k.start > s.lineStart {
			if q := in[k.start-1]; q == '"' || q == '\'' {
				if e := bytes.IndexByte(in[v:eol], q); e >= 0 {
					return v, v + e, true
				}
			}
		}
	}
	return v, trimRight(in, v, eol), false
}

// quotedValue returns the inside of the string that starts with the quote at
// v; a string left open runs to the end of the line.
func quotedValue(in []byte, v, eol int) (int, int) {
	q := in[v]
	for e := v + 1; e < eol; e++ {
		switch in[e] {
		case '\\':
			e++
		case q:
			return v + 1, e
		}
	}
	return v + 1, trimRight(in, v+1, eol)
}

func trimRight(in []byte, start, end int) int {
	for end > start && isBlank(in[end-1]) {
		end--
	}
	return end
}

// authSchemes are HTTP authentication schemes. They are kept before a
// redacted credential, so "Authorization: Basic [REDACTED]" still says how
// the client authenticated.
var authSchemes = []string{"basic", "bearer", "token", "digest", "negotiate", "ntlm", "apikey", "key", "dpop", "hoba", "mutual", "aws4-hmac-sha256"}

// skipScheme moves start past a leading authentication scheme. For a header
// in the middle of a line, the credential ends at the next blank.
func skipScheme(in []byte, start, end int, oneWord bool) (int, int) {
	w := start
	for w < end && !isBlank(in[w]) {
		w++
	}
	if w == end && isFoldOneOf(in[start:w], authSchemes) {
		return end, end // a scheme without a credential
	}
	if w < end && isFoldOneOf(in[start:w], authSchemes) {
		start = w
		for start < end && isBlank(in[start]) {
			start++
		}
	}
	if oneWord {
		e := start
		for e < end && !isBlank(in[e]) {
			e++
		}
		end = e
	}
	return start, end
}

func isFoldOneOf(w []byte, list []string) bool {
	for _, l := range list {
		if len(w) == len(l) && bytes.EqualFold(w, []byte(l)) {
			return true
		}
	}
	return false
}

// placeholders are values that say a secret is absent or elsewhere.
var placeholders = []string{
	"null", "nil", "none", "true", "false", "yes", "no", "on", "off", "undefined",
	"~", "-", "|", ">", "|-", ">-", "|+", ">+", "{}", "[]", "{", "[", "\"\"", "''",
}

// isSecretValue decides whether a value under a secret key is itself a
// secret: not empty, not already redacted, not a placeholder, a variable
// reference or a template, and not evidence the key's class allows.
func isSecretValue(v []byte, class keyClass) bool {
	if len(v) == 0 || isFoldOneOf(v, placeholders) {
		return false
	}
	if bytes.Contains(v, []byte(markerPrefix)) {
		// Redacted already, in whole or in part: judging the rest again
		// could redact differently the second time.
		return false
	}
	if len(bytes.Trim(v, "*")) == 0 {
		return false // ******** is already masked
	}
	switch v[0] {
	case '$':
		// $DB_PASSWORD, ${TOKEN}, $(cat file): a reference, not the secret.
		if len(v) > 1 && (isLetter(v[1]) || v[1] == '_' || v[1] == '{' || v[1] == '(') {
			return false
		}
	case '<':
		if isPlaceholderName(v) {
			return false // <password>
		}
	case '{':
		if bytes.HasPrefix(v, []byte("{{")) {
			return false // {{ .Password }}
		}
	}
	switch class {
	case keySession:
		return !allDigits(v)
	case keyPath:
		return v[0] != '/'
	case keyBare:
		return looksLikeBase64Key(v)
	}
	return true
}

// isPlaceholderName reports <name> and <some name>, as in usage text.
func isPlaceholderName(v []byte) bool {
	if len(v) < 3 || v[0] != '<' || v[len(v)-1] != '>' {
		return false
	}
	for _, c := range v[1 : len(v)-1] {
		if !ident[c] && c != ' ' {
			return false
		}
	}
	return true
}

func allDigits(v []byte) bool {
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// looksLikeBase64Key accepts values like the keys in ceph and Proxmox
// keyrings (AQBx…==) and rejects names and numbers under a generic "key".
func looksLikeBase64Key(v []byte) bool {
	if len(v) < 16 {
		return false
	}
	var letter, digit bool
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			letter = true
		case '0' <= c && c <= '9':
			digit = true
		case c == '+' || c == '/' || c == '=' || c == '-' || c == '_':
		default:
			return false
		}
	}
	return letter && digit
}
