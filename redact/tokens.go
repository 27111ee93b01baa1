package redact

import "bytes"

// Tokens that name themselves by a prefix. They are found at the start of a
// word, whatever labels them.

// tokenFirstLetters are the first letters of the prefixes onWord knows.
const tokenFirstLetters = "eAngxsrBbd"

// b64url holds [A-Za-z0-9_-].
var b64url = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = alnum[c] || c == '_' || c == '-'
	}
	return t
}()

// tokenSet holds the characters of an HTTP bearer credential (RFC 6750
// b64token).
var tokenSet = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = b64url[c] || c == '.' || c == '~' || c == '+' || c == '/' || c == '='
	}
	return t
}()

// prefixToken is a token recognised by its prefix and body.
type prefixToken struct {
	prefix string
	body   *[256]bool
	min    int  // fewest body bytes after the prefix
	exact  bool // the body has exactly min bytes and ends the word
	marker string
}

var prefixTokens = []prefixToken{
	{prefix: "nsk_", body: &b64url, min: 4, marker: "[REDACTED:nannyai-token]"},
	{prefix: "ghp_", body: &alnum, min: 20, marker: "[REDACTED:github-token]"},
	{prefix: "gho_", body: &alnum, min: 20, marker: "[REDACTED:github-token]"},
	{prefix: "ghu_", body: &alnum, min: 20, marker: "[REDACTED:github-token]"},
	{prefix: "ghs_", body: &alnum, min: 20, marker: "[REDACTED:github-token]"},
	{prefix: "ghr_", body: &alnum, min: 20, marker: "[REDACTED:github-token]"},
	{prefix: "github_pat_", body: &b64url, min: 20, marker: "[REDACTED:github-token]"},
	{prefix: "glpat-", body: &b64url, min: 20, marker: "[REDACTED:gitlab-token]"},
	{prefix: "xoxb-", body: &b64url, min: 10, marker: "[REDACTED:slack-token]"},
	{prefix: "xoxa-", body: &b64url, min: 10, marker: "[REDACTED:slack-token]"},
	{prefix: "xoxp-", body: &b64url, min: 10, marker: "[REDACTED:slack-token]"},
	{prefix: "xoxr-", body: &b64url, min: 10, marker: "[REDACTED:slack-token]"},
	{prefix: "xoxs-", body: &b64url, min: 10, marker: "[REDACTED:slack-token]"},
	{prefix: "AIza", body: &b64url, min: 30, marker: "[REDACTED:google-api-key]"},
	{prefix: "AKIA", body: &upperDigit, min: 16, exact: true, marker: "[REDACTED:aws-access-key-id]"},
	{prefix: "ASIA", body: &upperDigit, min: 16, exact: true, marker: "[REDACTED:aws-access-key-id]"},
	{prefix: "sk_live_", body: &alnum, min: 10, marker: "[REDACTED:stripe-key]"},
	{prefix: "sk_test_", body: &alnum, min: 10, marker: "[REDACTED:stripe-key]"},
	{prefix: "rk_live_", body: &alnum, min: 10, marker: "[REDACTED:stripe-key]"},
	{prefix: "rk_test_", body: &alnum, min: 10, marker: "[REDACTED:stripe-key]"},
}

// tokensByLetter indexes prefixTokens by first letter.
var tokensByLetter = func() (t [256][]*prefixToken) {
	for i := range prefixTokens {
		p := &prefixTokens[i]
		t[p.prefix[0]] = append(t[p.prefix[0]], p)
	}
	return t
}()

var upperDigit = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	return t
}()

// onWord checks the word starting at i for a self-naming token.
func (s *scanner) onWord(i int) int {
	w := s.in[i:]
	switch w[0] {
	case 'e':
		end, ok := jwtEnd(w)
		if ok {
			s.add(i, i+end, "[REDACTED:jwt]")
		}
		return i + end
	case 'B', 'b':
		return s.bearer(i)
	case 'd':
		return s.phpDefine(i)
	case 's':
		if end, ok := dashKeyEnd(w); ok {
			s.add(i, i+end, "[REDACTED:api-key]")
			return i + end
		} else if end > 0 {
			return i + end
		}
	}
	for _, t := range tokensByLetter[w[0]] {
		if len(w) <= len(t.prefix) || string(w[:len(t.prefix)]) != t.prefix {
			continue
		}
		end := len(t.prefix)
		for end < len(w) && t.body[w[end]] {
			end++
		}
		n := end - len(t.prefix)
		if n < t.min || t.exact && (n != t.min || end < len(w) && alnum[w[end]]) {
			continue
		}
		s.add(i, i+end, t.marker)
		return i + end
	}
	return i + 1
}

// jwtEnd returns the length of the JSON Web Token (or JWE) at the start of w:
// eyJ<header>.<payload>.<signature>, further parts included. When w holds no
// token it returns how far it looked (at least 1), so a long run is not
// searched again from every dash inside it.
func jwtEnd(w []byte) (int, bool) {
	if !bytes.HasPrefix(w, []byte("eyJ")) {
		return 1, false
	}
	p := runOf(w, 3, &b64url)
	if p < 10 || p >= len(w) || w[p] != '.' {
		return p, false
	}
	q := runOf(w, p+1, &b64url)
	if q-(p+1) < 4 || q >= len(w) || w[q] != '.' {
		return p, false
	}
	p = runOf(w, q+1, &b64url)
	for p+1 < len(w) && w[p] == '.' && b64url[w[p+1]] {
		p = runOf(w, p+1, &b64url)
	}
	return p, true
}

// dashKeyEnd returns the length of an sk-… API key (OpenAI, Anthropic) at the
// start of w. It wants a digit in the body, which words never have. Without
// a key it returns how far it looked, or 0 when w does not start with sk-.
func dashKeyEnd(w []byte) (int, bool) {
	if !bytes.HasPrefix(w, []byte("sk-")) {
		return 0, false
	}
	end := runOf(w, 3, &b64url)
	if end-3 < 20 || !bytes.ContainsAny(w[3:end], "0123456789") {
		return end, false
	}
	return end, true
}

func runOf(w []byte, from int, set *[256]bool) int {
	for from < len(w) && set[w[from]] {
		from++
	}
	return from
}

// bearer redacts the credential after "Bearer ", wherever it appears.
func (s *scanner) bearer(i int) int {
	in := s.in
	const word = "bearer"
	if len(in)-i < len(word)+2 || !bytes.EqualFold(in[i:i+len(word)], []byte(word)) {
		return i + 1
	}
	p := i + len(word)
	if p < len(in) && alnum[in[p]] {
		return p // Bearers, bearer_token=…: another word
	}
	q := p
	for q < len(in) && (in[q] == ' ' || in[q] == '\t') {
		q++
	}
	if q == p {
		return p
	}
	end := runOf(in, q, &tokenSet)
	if end < len(in) && !credentialEnd[in[end]] || !looksLikeCredential(in[q:end]) {
		return p
	}
	s.add(q, end, Marker)
	return q
}

// credentialEnd holds what may follow a whole bearer credential.
var credentialEnd = [256]bool{' ': true, '\t': true, '\r': true, '\n': true, '"': true, '\'': true, ',': true, ';': true, ')': true, ']': true, '}': true, '>': true, '\\': true, '&': true}

// looksLikeCredential tells a bearer credential from the next word of prose
// ("Bearer token expired") or an auth-param ("Bearer realm=…").
func looksLikeCredential(t []byte) bool {
	if len(t) < 8 {
		return false
	}
	if eq := bytes.IndexByte(t, '='); eq > 0 && len(bytes.Trim(t[eq:], "=")) > 0 {
		return false // realm=…, an auth-param; base64 padding only ends the token
	}
	if len(t) >= 20 {
		return true
	}
	return bytes.ContainsAny(t, "0123456789._~+/=-")
}
