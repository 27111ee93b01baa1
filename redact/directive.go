package redact

import "bytes"

// Config lines that give a secret after a blank instead of = or :.

// secretDirectives name the secret in "directive secret" lines: redis.conf
// (requirepass, masterauth) and snmpd.conf community strings. A generic
// "name value" rule would misread pam.d ("auth required pam_unix.so") and
// openvpn ("auth SHA256"), so only these are known.
var secretDirectives = []string{"requirepass", "masterauth", "rocommunity", "rwcommunity", "rocommunity6", "rwcommunity6"}

// directiveFirst holds the first letters of secretDirectives and of the
// netrc keywords "machine", "default" and "password".
var directiveFirst = [256]bool{'r': true, 'm': true, 'd': true, 'p': true}

// lineDirective checks the line whose content starts at at.
func (s *scanner) lineDirective(at int) {
	in := s.in
	w := at
	for w < len(in) && ident[in[w]] {
		w++
	}
	word := in[at:w]
	switch {
	case isOneOf(word, secretDirectives):
		s.redactNextWord(w)
	case string(word) == "machine" || string(word) == "default":
		// netrc: machine host login bob password SECRET
		eol := s.lineEnd(at)
		if p := bytes.Index(in[w:eol], []byte(" password ")); p >= 0 {
			s.redactNextWord(w + p + len(" password"))
		}
	case string(word) == "password":
		// netrc spread over lines: "  password SECRET" and nothing after.
		if start, end, ok := s.soleWordAfter(w); ok && in[start] != '=' && in[start] != ':' {
			s.add(start, end, Marker)
		}
	}
}

// soleWordAfter finds the word after the blanks at p, when it is the last
// word on the line and a secret value.
func (s *scanner) soleWordAfter(p int) (int, int, bool) {
	in := s.in
	eol := s.lineEnd(p)
	if p >= eol || !isBlank(in[p]) {
		return 0, 0, false
	}
	start := p
	for start < eol && isBlank(in[start]) {
		start++
	}
	end := start
	for end < eol && !isBlank(in[end]) {
		end++
	}
	if start == end || trimRight(in, end, eol) != end || !isSecretValue(in[start:end], keySecret) {
		return 0, 0, false
	}
	return start, end, true
}

// redactNextWord redacts the word after the blanks at p.
func (s *scanner) redactNextWord(p int) {
	in := s.in
	if p >= len(in) || !isBlank(in[p]) {
		return
	}
	for p < len(in) && isBlank(in[p]) {
		p++
	}
	e := p
	for e < len(in) && !isBlank(in[e]) && in[e] != '\n' {
		e++
	}
	if isSecretValue(in[p:e], keySecret) {
		s.add(p, e, Marker)
	}
}
