package redact

// Things that start with a dash: key blocks and command-line options in
// text (ps output, unit files, shell history, apt logs).

// maxCommand bounds the text examined around an option for its command.
const maxCommand = 1024

// maxWords bounds the words of one command line examined.
const maxWords = 64

// shortFlagLetters are the letters of short options that may carry a secret
// in some program's table (see programs and genericFlags).
var shortFlagLetters = func() (t [256]bool) {
	for _, p := range programs {
		for _, f := range p.flags {
			if len(f.flag) >= 2 && f.flag[1] != '-' {
				t[f.flag[1]] = true
			}
		}
	}
	for _, f := range genericFlags {
		t[f.flag[1]] = true
	}
	t['b'], t['n'] = true, true // htpasswd -b, -nb
	return t
}()

// tableLongFlags are the long options of the program table (curl --user).
var tableLongFlags = func() map[string]bool {
	m := map[string]bool{}
	for _, p := range programs {
		for _, f := range p.flags {
			if len(f.flag) > 2 && f.flag[1] == '-' {
				m[f.flag] = true
			}
		}
	}
	return m
}()

// onDash handles a dash: the armor of a key block, or an option of a
// command line.
func (s *scanner) onDash(i int) int {
	in := s.in
	if i+4 < len(in) && in[i+1] == '-' && in[i+2] == '-' && in[i+3] == '-' {
		if end, ok := s.privateKeyBlock(i); ok {
			return end
		}
	}
	if i > s.lineStart && !isBlank(in[i-1]) && in[i-1] != '"' && in[i-1] != '\'' {
		return i + 1 // not an option: x86_64-linux-gnu, 2025-11-21
	}
	if i+1 >= len(in) {
		return i + 1
	}
	if in[i+1] == '-' {
		return s.longOption(i)
	}
	if shortFlagLetters[in[i+1]] && i >= s.argvDone {
		s.commandLine(i)
	}
	return i + 1
}

// longOption handles --name value in text where name is a secret's name.
// --name=value is left to onEquals.
func (s *scanner) longOption(i int) int {
	in := s.in
	p := i + 2
	for p < len(in) && ident[in[p]] && p-i < maxKey {
		p++
	}
	if tableLongFlags[string(in[i:p])] && i >= s.argvDone {
		s.commandLine(i)
	}
	if p == i+2 || p >= len(in) || in[p] != ' ' && in[p] != '\t' {
		return p
	}
	class := classifyFlag(in[i+2 : p])
	if class == keyPlain {
		return p
	}
	v := p
	for v < len(in) && (in[v] == ' ' || in[v] == '\t') {
		v++
	}
	e := v
	for e < len(in) && !isBlank(in[e]) && in[e] != '\n' {
		e++
	}
	if v == e || in[v] == '-' || !isSecretValue(in[v:e], class) {
		return p
	}
	s.add(v, e, Marker)
	return p
}

// commandLine applies the command-line rules to the command around the short
// option at i: the words of its line from the nearest known program before
// it (or the command's start) to the end of the line or a | ; && ||
// separator. It marks the command done, so its other options do not repeat
// the work.
func (s *scanner) commandLine(i int) {
	in := s.in
	var words [maxWords][]byte
	var offs [maxWords]int
	// Words before the option, nearest first.
	before := 0
	for q := i; before < maxWords/2; {
		for q > s.lineStart && isBlank(in[q-1]) {
			q--
		}
		p := q
		for p > s.lineStart && !isBlank(in[p-1]) && q-p < maxCommand {
			p--
		}
		if p == q || isSeparator(in[p:q]) || i-p > maxCommand {
			break
		}
		words[before], offs[before] = in[p:q], p
		before++
		q = p
	}
	for a, b := 0, before-1; a < b; a, b = a+1, b-1 {
		words[a], words[b] = words[b], words[a]
		offs[a], offs[b] = offs[b], offs[a]
	}
	// The option and the words after it.
	n := before
	eol := s.lineEnd(i)
	for p := i; n < maxWords; {
		for p < eol && isBlank(in[p]) {
			p++
		}
		q := p
		for q < eol && !isBlank(in[q]) && q-p < maxCommand {
			q++
		}
		if q == p || isSeparator(in[p:q]) {
			break
		}
		words[n], offs[n] = in[p:q], p
		n++
		p = q
	}
	s.argvDone = offs[n-1] + len(words[n-1])
	start := 0
	for k := before - 1; k >= 0; k-- {
		if lookupProgram(words[k]) != nil {
			start = k
			break
		}
	}
	commandSecrets(words[start:n], func(idx, lo, hi int) {
		at := offs[start+idx]
		s.add(at+lo, at+hi, Marker)
	})
}

func isSeparator(w []byte) bool {
	switch string(w) {
	case "|", "||", "&&", ";", "&":
		return true
	}
	return false
}
