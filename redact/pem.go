package redact

import "bytes"

// pemArmor is one way of writing the lines around a key block.
type pemArmor struct {
	begin, labelEnd, end string
}

var pemArmors = []pemArmor{
	{begin: "-----BEGIN ", labelEnd: "-----", end: "-----END"}, // PEM, OpenSSH, PGP
	{begin: "---- BEGIN ", labelEnd: " ----", end: "---- END"}, // SSH.com / RFC 4716
}

const pemMarker = "[REDACTED:private-key]"

// privateKeyBlock redacts the body of a private-key block that starts at i,
// keeping the BEGIN and END lines. A block without END is redacted to the end
// of the input. Certificates and public keys are left alone.
func (s *scanner) privateKeyBlock(i int) (int, bool) {
	in := s.in
	for _, a := range pemArmors {
		if !bytes.HasPrefix(in[i:], []byte(a.begin)) {
			continue
		}
		labelStart := i + len(a.begin)
		window := in[labelStart:min(len(in), labelStart+80)]
		labelLen := bytes.Index(window, []byte(a.labelEnd))
		if labelLen < 0 || bytes.IndexByte(window[:labelLen], '\n') >= 0 {
			return 0, false
		}
		label := window[:labelLen]
		if !isArmorLabel(label) {
			return labelStart, true
		}
		bodyStart := labelStart + labelLen + len(a.labelEnd)
		if !bytes.Contains(label, []byte("PRIVATE KEY")) && !bytes.Contains(label, []byte("SECRET KEY")) {
			return labelStart, true // not a key block; the label is text like any other
		}
		bodyEnd := len(in)
		if e := bytes.Index(in[bodyStart:], []byte(a.end)); e >= 0 {
			bodyEnd = bodyStart + e
		}
		start, end := trimLineBreaks(in, bodyStart, bodyEnd)
		s.add(start, end, pemMarker)
		return bodyEnd, true
	}
	return 0, false
}

// trimLineBreaks keeps the line breaks that end the BEGIN line and start the
// END line, real or escaped as \n in a JSON string, out of the redaction.
func trimLineBreaks(in []byte, start, end int) (int, int) {
	for _, br := range []string{"\r\n", "\n", `\r\n`, `\n`} {
		if bytes.HasPrefix(in[start:end], []byte(br)) {
			start += len(br)
			break
		}
	}
	for _, br := range []string{"\r\n", "\n", `\r\n`, `\n`} {
		if bytes.HasSuffix(in[start:end], []byte(br)) {
			end -= len(br)
			break
		}
	}
	return start, end
}

// isArmorLabel accepts what RFC 7468 labels and PGP armor use: upper-case
// letters, digits, spaces and dashes.
func isArmorLabel(label []byte) bool {
	for _, c := range label {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == ' ' || c == '-') {
			return false
		}
	}
	return len(label) > 0
}
