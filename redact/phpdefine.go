package redact

import "bytes"

// phpDefine redacts the value of a PHP constant named like a secret, as in
// wp-config.php: define( 'DB_PASSWORD', 'SECRET' ). WordPress's keys and
// salts (AUTH_KEY, NONCE_SALT, …) count as secrets here. It returns where to
// continue.
func (s *scanner) phpDefine(i int) int {
	in := s.in
	const word = "define"
	p := i + len(word)
	if !bytes.HasPrefix(in[i:], []byte(word)) {
		return i + 1
	}
	p = skipBlanks(in, p)
	if p >= len(in) || in[p] != '(' {
		return i + 1
	}
	keyStart, keyEnd, ok := phpString(in, skipBlanks(in, p+1))
	if !ok {
		return i + 1
	}
	p = skipBlanks(in, keyEnd+1)
	if p >= len(in) || in[p] != ',' {
		return i + 1
	}
	valStart, valEnd, ok := phpString(in, skipBlanks(in, p+1))
	if !ok || !isPHPSecretName(in[keyStart:keyEnd]) || !isSecretValue(in[valStart:valEnd], keySecret) {
		return i + 1
	}
	s.add(valStart, valEnd, Marker)
	return i + 1
}

// phpString returns the inside of the quoted string at p, on one line.
func phpString(in []byte, p int) (int, int, bool) {
	if p >= len(in) || in[p] != '\'' && in[p] != '"' {
		return 0, 0, false
	}
	for e := p + 1; e < len(in) && in[e] != '\n'; e++ {
		switch in[e] {
		case '\\':
			e++
		case in[p]:
			return p + 1, e, true
		}
	}
	return 0, 0, false
}

func isPHPSecretName(name []byte) bool {
	if classifyKey(name) != keyPlain {
		return true
	}
	for _, c := range name {
		if 'a' <= c && c <= 'z' {
			return false // a constant is upper case
		}
	}
	return bytes.HasSuffix(name, []byte("_KEY")) || bytes.HasSuffix(name, []byte("_SALT"))
}

func skipBlanks(in []byte, p int) int {
	for p < len(in) && isBlank(in[p]) {
		p++
	}
	return p
}
