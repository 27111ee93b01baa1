package patch

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
)

// maxShebang is how much of the first line the kernel reads for #!.
const maxShebang = 256

// shebang is what a script's #! line asks for: the interpreter and at
// most one argument (the kernel passes the rest of the line as one).
type shebang struct {
	interp string
	arg    string
}

// parseShebang reads the #! line the way the kernel does: the interpreter
// up to the first blank, the trimmed rest as one optional argument. It
// refuses what the kernel would not run and anything not plain ASCII.
func parseShebang(script []byte) (shebang, error) {
	if !bytes.HasPrefix(script, []byte("#!")) {
		return shebang{}, fmt.Errorf("%w: the script does not start with a #! line naming its interpreter", ErrRefused)
	}
	line := script[2:]
	end := bytes.IndexByte(line, '\n')
	if end < 0 || end+2 > maxShebang {
		return shebang{}, fmt.Errorf("%w: the #! line is longer than %d bytes or does not end", ErrRefused, maxShebang)
	}
	text := strings.TrimSuffix(string(line[:end]), "\r")
	for i := 0; i < len(text); i++ {
		if c := text[i]; (c < 0x20 && c != '\t') || c > 0x7e {
			return shebang{}, fmt.Errorf("%w: the #! line holds a control or non-ASCII character", ErrRefused)
		}
	}
	text = strings.Trim(text, " \t")
	sb := shebang{interp: text}
	if i := strings.IndexAny(text, " \t"); i >= 0 {
		sb = shebang{interp: text[:i], arg: strings.TrimLeft(text[i:], " \t")}
	}
	if sb.interp == "" {
		return shebang{}, fmt.Errorf("%w: the #! line names no interpreter", ErrRefused)
	}
	return sb, nil
}

// envPrograms are the spellings of env that "#!/usr/bin/env NAME" uses.
var envPrograms = []string{"/usr/bin/env", "/bin/env"}

// interpreterArgv resolves a #! line against the policy's interpreters and
// PATH and returns the argv that runs the script from scriptPath.
// "#!/usr/bin/env NAME" is resolved as env would, through PATH, and the
// program found must itself be allowed; an interpreter's one argument
// ("#!/bin/sh -e") must be plain options.
func interpreterArgv(sb shebang, s Settings, scriptPath string) ([]string, error) {
	allowed := func(p string) bool { return slices.Contains(s.Interpreters, p) }
	if slices.Contains(envPrograms, sb.interp) {
		found, err := lookPath(sb.arg, s.Path)
		if err != nil {
			return nil, err
		}
		if !allowed(found) {
			return nil, fmt.Errorf("%w: #!%s %s finds %s on the run's PATH, which is not in the policy's patches.interpreters (%s)",
				ErrRefused, sb.interp, sb.arg, found, strings.Join(s.Interpreters, ", "))
		}
		return []string{found, scriptPath}, nil
	}
	if path.Clean(sb.interp) != sb.interp || !allowed(sb.interp) {
		return nil, fmt.Errorf("%w: the script's interpreter %s is not in the policy's patches.interpreters (%s)",
			ErrRefused, clip(sb.interp), strings.Join(s.Interpreters, ", "))
	}
	if sb.arg == "" {
		return []string{sb.interp, scriptPath}, nil
	}
	if !plainOptions(sb.arg) {
		return nil, fmt.Errorf("%w: the #! line's argument %q is not plain options such as -e", ErrRefused, clip(sb.arg))
	}
	return []string{sb.interp, sb.arg, scriptPath}, nil
}

// plainOptions accepts "-e", "-eu", "-x", "--posix": a dash, then letters,
// digits and dashes.
func plainOptions(s string) bool {
	if len(s) < 2 || len(s) > 32 || s[0] != '-' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// lookPath finds name in the run's PATH as env would: the first regular,
// executable file.
func lookPath(name, pathList string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/ \t") || strings.HasPrefix(name, "-") {
		return "", fmt.Errorf("%w: #!/usr/bin/env needs one program name (no options such as -S), got %q", ErrRefused, clip(name))
	}
	for _, dir := range strings.Split(pathList, ":") {
		p := path.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: #!/usr/bin/env %s: %s is not on the run's PATH (%s)", ErrRefused, name, name, pathList)
}
