package redact

import "slices"

// keyClass says whether a key (the label of a value) names a secret, and
// which values under it are still evidence rather than secrets.
type keyClass uint8

const (
	keyPlain   keyClass = iota // not a secret
	keySecret                  // any real value is a secret
	keySession                 // a secret, but a bare number is a session number (XDG_SESSION_ID=3)
	keyPath                    // a secret, but an absolute path is a location (PWD=/root, credentials=/etc/smb.cred)
	keyBare                    // "key": only a long base64 value is a secret (ceph and Proxmox keyrings)
)

// maxKey bounds how much of a key is examined; a longer key is judged by its
// end, which is where the noun that says what it holds is.
const maxKey = 64

// secretEndings are the endings of a normalised key (lower case, separators
// dropped) that make it a secret's name. The end of a compound key names
// what it holds: "token_path" holds a path, "refresh_token" a token.
var secretEndings = []string{
	"password", "passwd", "passphrase", "pass", "pwd",
	"secret", "token", "bearer", "auth", "authorization", "authkey",
	"apikey", "accesskey", "secretkey", "privatekey", "privkey",
	"signingkey", "encryptionkey", "masterkey", "accountkey",
	"credential", "credentials", "creds", "cookie", "cookies", "psk",
	"session", "sessionid", "sessid", "sessionkey", "community",
}

// notSecretEndings are words ending in a secret ending that are not secrets.
var notSecretEndings = []string{"bypass", "compass", "surpass", "askpass", "nopass", "oldpwd"}

// isTrailerWord reports words that say how a secret is encoded or which one
// it is, not what it is; they are skipped before judging: password_hash,
// session_id, client_secret_value, secret_b64.
func isTrailerWord(w []byte) bool {
	switch string(w) {
	case "value", "val", "string", "str", "data", "b64", "base64", "hash", "hex",
		"raw", "enc", "encrypted", "plain", "plaintext", "text", "id", "new", "old":
		return true
	}
	return false
}

// negatingWords at the start of a flag mean it takes no value: --no-password,
// --ask-password.
var negatingWords = []string{"no", "ask", "prompt", "allow", "disable", "enable", "skip", "show", "hide", "print", "require", "without", "use"}

// keyWords splits key into lower-case words at separators and camelCase
// boundaries, into buf. It returns the words as [start,end) pairs over buf.
func keyWords(key []byte, buf *[maxKey]byte, words *[maxKey][2]int) (norm []byte, n int) {
	if len(key) > maxKey {
		key = key[len(key)-maxKey:]
	}
	nb := 0
	start := -1
	var prev byte
	for _, c := range key {
		if !alnum[c] {
			if start >= 0 {
				words[n] = [2]int{start, nb}
				n++
				start = -1
			}
			prev = c
			continue
		}
		upper := 'A' <= c && c <= 'Z'
		if start >= 0 && upper && 'a' <= prev && prev <= 'z' {
			words[n] = [2]int{start, nb}
			n++
			start = -1
		}
		if start < 0 {
			start = nb
		}
		prev = c
		if upper {
			c += 'a' - 'A'
		}
		buf[nb] = c
		nb++
	}
	if start >= 0 {
		words[n] = [2]int{start, nb}
		n++
	}
	return buf[:nb], n
}

// classifyKey judges a key by its name.
func classifyKey(key []byte) keyClass {
	var buf [maxKey]byte
	var words [maxKey][2]int
	norm, n := keyWords(key, &buf, &words)
	if n == 0 {
		return keyPlain
	}
	// Drop trailing words that only say how the secret is stored.
	for n > 1 && isTrailerWord(norm[words[n-1][0]:words[n-1][1]]) {
		n--
	}
	norm = norm[:words[n-1][1]]
	// password2, oauth2: a trailing number does not change the meaning.
	for len(norm) > 0 && '0' <= norm[len(norm)-1] && norm[len(norm)-1] <= '9' {
		norm = norm[:len(norm)-1]
	}
	switch {
	case len(norm) == 0:
		return keyPlain
	case string(norm) == "key":
		return keyBare
	}
	if hasAnySuffix(norm, notSecretEndings) {
		return keyPlain
	}
	stem := secretStem(norm, words[:n])
	switch stem {
	case "":
		return keyPlain
	case "session", "sessionid", "sessid":
		return keySession
	case "credentials", "credential", "creds", "pwd":
		return keyPath
	}
	return keySecret
}

// secretStem returns the secret ending norm ends with, or "". The ending
// must lie inside the last word or start at a word boundary: PGPASSWORD and
// api_key match, but jwt_oken does not match token.
func secretStem(norm []byte, words [][2]int) string {
	if len(norm) == 0 {
		return ""
	}
	for _, stem := range stemsByLastByte[norm[len(norm)-1]] {
		at := len(norm) - len(stem)
		if at < 0 || string(norm[at:]) != stem {
			continue
		}
		if at >= words[len(words)-1][0] {
			return stem
		}
		for _, w := range words {
			if w[0] == at {
				return stem
			}
		}
	}
	return ""
}

// stemsByLastByte indexes secretEndings by last byte, longest first.
var stemsByLastByte = func() (t [256][]string) {
	for _, s := range secretEndings {
		t[s[len(s)-1]] = append(t[s[len(s)-1]], s)
	}
	for i := range t {
		slices.SortStableFunc(t[i], func(a, b string) int { return len(b) - len(a) })
	}
	return t
}()

// classifyFlag judges a long option name (without its dashes) that is
// followed by a separate value: like a key, except that --no-password and
// --ask-password take no value.
func classifyFlag(name []byte) keyClass {
	c := classifyKey(name)
	if c == keyPlain || c == keyBare {
		return keyPlain
	}
	var buf [maxKey]byte
	var words [maxKey][2]int
	norm, n := keyWords(name, &buf, &words)
	if n > 1 && isOneOf(norm[words[0][0]:words[0][1]], negatingWords) {
		return keyPlain
	}
	return c
}

func isOneOf(w []byte, list []string) bool {
	for _, l := range list {
		if string(w) == l {
			return true
		}
	}
	return false
}

func hasAnySuffix(b []byte, list []string) bool {
	for _, l := range list {
		if len(b) >= len(l) && string(b[len(b)-len(l):]) == l {
			return true
		}
	}
	return false
}
