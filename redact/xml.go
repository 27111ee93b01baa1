package redact

import "bytes"

// onLess redacts the text of an XML element named like a secret:
// <password>SECRET</password> (Tomcat, Maven settings.xml, Jenkins). Secrets
// in attributes (password="…") are key=value pairs and handled there.
func (s *scanner) onLess(i int) int {
	in := s.in
	p := i + 1
	for p < len(in) && ident[in[p]] && p-i <= maxKey {
		p++
	}
	if p == i+1 || p+1 >= len(in) || in[p] != '>' {
		return i + 1
	}
	class := classifyKey(in[i+1 : p])
	if class == keyPlain {
		return i + 1
	}
	v := p + 1
	if isBlank(in[v]) {
		return i + 1 // prose: "-p<password> db"
	}
	end := s.lineEnd(v)
	if e := bytes.IndexByte(in[v:end], '<'); e >= 0 {
		end = v + e
	}
	end = trimRight(in, v, end)
	if !isSecretValue(in[v:end], class) {
		return i + 1
	}
	s.add(v, end, Marker)
	return p + 1
}
