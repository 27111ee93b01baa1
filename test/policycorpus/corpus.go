package policycorpus

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Entry is one corpus command and its line in the file.
type Entry struct {
	Line int
	Cmd  string
}

// Read reads one command per line, skipping blank lines and lines starting
// with #. \uXXXX sequences are decoded so the corpus can hold invisible and
// look-alike characters in a reviewable form.
func Read(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read corpus: %w", err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		out = append(out, Entry{Line: n, Cmd: DecodeEscapes(text)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read corpus %s: %w", path, err)
	}
	return out, nil
}

// DecodeEscapes replaces \uXXXX (four hex digits) with the character; any
// other backslash is left for the command-line parser.
func DecodeEscapes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+6 <= len(s) && s[i+1] == 'u' {
			if v, err := strconv.ParseUint(s[i+2:i+6], 16, 32); err == nil {
				b.WriteRune(rune(v))
				i += 5
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
