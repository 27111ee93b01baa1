package redact

import "bytes"

// maxUserinfo bounds how far back from an @ the password of a URL is looked
// for.
const maxUserinfo = 256

// onAt redacts the password of scheme://user:password@host. The user stays:
// it says which account the URL logs in as.
func (s *scanner) onAt(i int) int {
	if s.schemeEnd < 0 || s.schemeEnd > i || i-s.schemeEnd > maxUserinfo {
		return i + 1
	}
	userinfo := s.in[s.schemeEnd:i]
	if bytes.ContainsAny(userinfo, " \t\r/\"'<>") {
		s.schemeEnd = -1 // the URL's authority ended before this @, and before any later one
		return i + 1
	}
	if bytes.Contains(userinfo, []byte(markerPrefix)) {
		return i + 1 // redacted already
	}
	colon := bytes.IndexByte(userinfo, ':')
	if colon < 0 {
		return i + 1
	}
	password := userinfo[colon+1:]
	if len(password) == 0 {
		return i + 1
	}
	s.add(s.schemeEnd+colon+1, i, Marker)
	return i + 1
}
