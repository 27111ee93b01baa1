package redact

// cryptHash redacts a crypt(3) password hash that follows a colon, as in
// /etc/shadow, htpasswd files and getent output: "root:$6$salt$hash:19000:…"
// becomes "root:$6$[REDACTED]:19000:…". The algorithm id stays. at is just
// after the colon; locked accounts prefix the hash with !.
func (s *scanner) cryptHash(at int) (int, bool) {
	in := s.in
	p := at
	for p < len(in) && in[p] == '!' && p-at < 2 {
		p++
	}
	if p >= len(in) || in[p] != '$' {
		return 0, false
	}
	id := p + 1
	q := id
	for q < len(in) && alnum[in[q]] && q-id < 8 {
		q++
	}
	if q == id || q >= len(in) || in[q] != '$' {
		return 0, false
	}
	start := q + 1
	end := start
	dollars := 0
	for end < len(in) && cryptSet[in[end]] {
		if in[end] == '$' {
			dollars++
		}
		end++
	}
	if end-start < 8 || dollars == 0 && end-start < 20 {
		return 0, false // $1$ab: too short to be a hash
	}
	if end < len(in) && in[end] != ':' && !isBlank(in[end]) && in[end] != '\n' {
		return 0, false
	}
	s.add(start, end, Marker)
	return start, true
}

// cryptSet holds the characters of crypt(3) salts and hashes, and the
// separators between parameters, salt and hash.
var cryptSet = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = alnum[c] || c == '.' || c == '/' || c == '$' || c == '=' || c == ','
	}
	return t
}()
