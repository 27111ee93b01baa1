package redact

import (
	"bytes"
	"slices"
	"unsafe"
)

// valuePart says which part of a flag's value is the secret.
type valuePart uint8

const (
	partWhole      valuePart = iota
	partAfterColon           // user:password (curl -u); nothing without a colon, where the tool prompts
	partAfterPct             // user%password (smbclient -U)
	partAfterPass            // pass:password (openssl -passin); env:, file:, fd: and stdin name a source
	partUserPass             // like partAfterColon, but uid:gid pairs (-u 0:0) are not secrets
)

// flagRule is an option whose value is a secret.
type flagRule struct {
	flag string
	part valuePart
	// optional: the value can only be attached (mysql -pSECRET, --password=SECRET);
	// the option alone prompts, so the next argument is not its value.
	optional bool
	// separate: the value is only ever the next argument (openssl -k; -kfile
	// is another option).
	separate bool
}

// program holds the secret-bearing options of one tool.
type program struct {
	flags []flagRule
	// afterSubcommand: the flags apply only after this subcommand (docker login).
	afterSubcommand string
	// noSeparateLongSecret: a secret-named long option alone takes no value
	// from the next argument (mysql --password prompts).
	noSeparateLongSecret bool
	// batchLast: a short-option cluster with b puts the password last (htpasswd -b).
	batchLast bool
}

var mysqlFamily = &program{
	flags:                []flagRule{{flag: "-p", optional: true}, {flag: "--password", optional: true}},
	noSeparateLongSecret: true,
}

var ldapTools = &program{flags: []flagRule{{flag: "-w"}}}

var registryLogin = &program{flags: []flagRule{{flag: "-p"}}, afterSubcommand: "login"}

// programs maps a tool's base name to its secret-bearing options.
var programs = map[string]*program{
	"sshpass":       {flags: []flagRule{{flag: "-p"}}},
	"mysql":         mysqlFamily,
	"mysqldump":     mysqlFamily,
	"mysqladmin":    mysqlFamily,
	"mysqlcheck":    mysqlFamily,
	"mysqlimport":   mysqlFamily,
	"mysqlshow":     mysqlFamily,
	"mysqlpump":     mysqlFamily,
	"mariadb":       mysqlFamily,
	"mariadb-dump":  mysqlFamily,
	"mariadb-admin": mysqlFamily,
	"mariadb-check": mysqlFamily,
	"curl": {flags: []flagRule{
		{flag: "-u", part: partAfterColon}, {flag: "--user", part: partAfterColon},
		{flag: "-U", part: partAfterColon}, {flag: "--proxy-user", part: partAfterColon},
	}},
	"redis-cli":  {flags: []flagRule{{flag: "-a"}}},
	"ldapsearch": ldapTools, "ldapmodify": ldapTools, "ldapadd": ldapTools, "ldapdelete": ldapTools,
	"ldapwhoami": ldapTools, "ldapcompare": ldapTools, "ldapmodrdn": ldapTools, "ldapexop": ldapTools,
	"ldappasswd": {flags: []flagRule{{flag: "-w"}, {flag: "-s"}, {flag: "-a"}}},
	"ipmitool":   {flags: []flagRule{{flag: "-P"}, {flag: "-k"}, {flag: "-y"}}},
	"smbclient":  {flags: []flagRule{{flag: "-U", part: partAfterPct}, {flag: "--user", part: partAfterPct}}},
	"rpcclient":  {flags: []flagRule{{flag: "-U", part: partAfterPct}, {flag: "--user", part: partAfterPct}}},
	"smbcacls":   {flags: []flagRule{{flag: "-U", part: partAfterPct}, {flag: "--user", part: partAfterPct}}},
	"openssl": {flags: []flagRule{
		{flag: "-passin", part: partAfterPass}, {flag: "-passout", part: partAfterPass},
		{flag: "-pass", part: partAfterPass}, {flag: "-k", separate: true},
	}},
	"htpasswd": {batchLast: true},
	"docker":   registryLogin,
	"podman":   registryLogin,
	"buildah":  registryLogin,
	"skopeo":   registryLogin,
	"helm":     registryLogin,
}

// genericFlags apply to every program.
var genericFlags = []flagRule{{flag: "-u", part: partUserPass}}

func lookupProgram(word []byte) *program {
	if k := bytes.LastIndexByte(word, '/'); k >= 0 {
		word = word[k+1:]
	}
	return programs[string(word)]
}

// emitFunc receives the part of args[idx] from lo to hi that is a secret.
type emitFunc func(idx, lo, hi int)

// commandSecrets finds the secrets that options of a command carry.
// args[0] is the program (or whatever started the command); a later argument
// naming a known program (env X=1 mysql …, timeout 5 curl …) switches rules.
func commandSecrets(args [][]byte, emit emitFunc) {
	prog := lookupProgram(args[0])
	subSeen := false
	batchLast := false
	for i := 1; i < len(args); i++ {
		a := args[i]
		if len(a) == 0 {
			continue
		}
		if a[0] != '-' {
			if p := lookupProgram(a); p != nil {
				prog, subSeen = p, false
			} else if prog != nil && string(a) == prog.afterSubcommand {
				subSeen = true
			}
			continue
		}
		rules := genericFlags
		if prog != nil && (prog.afterSubcommand == "" || subSeen) {
			rules = prog.flags
			if prog.batchLast && len(a) > 1 && a[1] != '-' && bytes.IndexByte(a, 'b') > 0 {
				batchLast = true
			}
		}
		if next, ok := matchFlag(args, i, rules, emit); ok {
			i = next
			continue
		}
		if next, ok := longSecretFlag(args, i, prog, emit); ok {
			i = next
		}
	}
	if batchLast && len(args) > 2 {
		emitPart(args, len(args)-1, 0, partWhole, emit)
	}
}

// matchFlag applies the first rule that matches args[i], and returns the
// index of the last argument it consumed.
func matchFlag(args [][]byte, i int, rules []flagRule, emit emitFunc) (int, bool) {
	a := args[i]
	for _, r := range rules {
		if !bytes.HasPrefix(a, []byte(r.flag)) || r.separate && len(a) != len(r.flag) {
			continue
		}
		switch {
		case len(a) == len(r.flag):
			if r.optional || i+1 >= len(args) {
				return i, true
			}
			emitPart(args, i+1, 0, r.part, emit)
			return i + 1, true
		case len(r.flag) == 2: // -pSECRET
			emitPart(args, i, 2, r.part, emit)
			return i, true
		case a[len(r.flag)] == '=': // --user=bob:SECRET
			emitPart(args, i, len(r.flag)+1, r.part, emit)
			return i, true
		}
	}
	return i, false
}

// longSecretFlag handles --password SECRET, --token SECRET and other long
// options named like a secret, whose value is the next argument.
func longSecretFlag(args [][]byte, i int, prog *program, emit emitFunc) (int, bool) {
	a := args[i]
	if len(a) < 3 || a[1] != '-' || bytes.IndexByte(a, '=') >= 0 {
		return i, false
	}
	if classifyFlag(a[2:]) == keyPlain {
		return i, false
	}
	if prog != nil && prog.noSeparateLongSecret || i+1 >= len(args) {
		return i, true
	}
	if v := args[i+1]; len(v) > 0 && v[0] == '-' {
		return i, true // the option was a switch after all
	}
	emitPart(args, i+1, 0, partWhole, emit)
	return i + 1, true
}

// emitPart reports the secret part of args[idx][from:].
func emitPart(args [][]byte, idx, from int, part valuePart, emit emitFunc) {
	v := args[idx][from:]
	if bytes.Contains(v, []byte(markerPrefix)) {
		return // redacted already
	}
	lo := 0
	switch part {
	case partAfterColon, partUserPass:
		c := bytes.IndexByte(v, ':')
		if c < 0 || part == partUserPass && allDigits(v[c+1:]) {
			return
		}
		lo = c + 1
	case partAfterPct:
		c := bytes.IndexByte(v, '%')
		if c < 0 {
			return
		}
		lo = c + 1
	case partAfterPass:
		if !bytes.HasPrefix(v, []byte("pass:")) {
			return
		}
		lo = len("pass:")
	}
	if lo >= len(v) || isPlaceholderName(v[lo:]) {
		return // nothing, or a placeholder in usage text: -p<password>
	}
	emit(idx, from+lo, from+len(v))
}

// Argv returns argv with secrets replaced by markers, for logs and for the
// model: values of options that carry passwords and tokens (sshpass -p,
// mysql -pSECRET, curl -u user:SECRET, --password SECRET, --token=SECRET),
// and, inside every argument, whatever String redacts (PGPASSWORD=…,
// Authorization headers, URLs with passwords, tokens). argv itself is
// returned when nothing needed redacting; it is never modified.
func Argv(argv []string) []string {
	if len(argv) == 0 {
		return argv
	}
	args := make([][]byte, len(argv))
	for i, a := range argv {
		// Read-only views of the strings: commandSecrets never writes.
		args[i] = unsafe.Slice(unsafe.StringData(a), len(a))
	}
	redacted := make([]string, 0, 4)
	var at []int
	commandSecrets(args, func(idx, lo, hi int) {
		at = append(at, idx)
		redacted = append(redacted, argv[idx][:lo]+Marker+argv[idx][hi:])
	})
	var out []string
	for i, a := range argv {
		r := a
		if k := slices.Index(at, i); k >= 0 {
			r = redacted[k]
		}
		r = String(r)
		if r != a && out == nil {
			out = make([]string, len(argv))
			copy(out, argv)
		}
		if out != nil {
			out[i] = r
		}
	}
	if out == nil {
		return argv
	}
	return out
}
