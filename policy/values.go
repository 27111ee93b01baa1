package policy

import (
	"fmt"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// OpenMode says how the broker hands a path operand to the program.
type OpenMode uint8

const (
	// OpenCheckOnly: the broker resolves the path one symlink hop at a time,
	// judges every hop with CheckPath, and passes the path. For tools whose
	// output names the file or that walk directories (ls, stat, du, find, wc).
	OpenCheckOnly OpenMode = iota + 1
	// OpenFD: the broker opens the file itself (judging every hop) and passes
	// /dev/fd/N, so nothing can swap the file between check and use. For
	// content readers whose output does not name the file (cat, head, sort).
	OpenFD
	// OpenDevice: the broker resolves the path one symlink hop at a time,
	// requires a block device whose every directory only root can change,
	// and passes the device's own path (/dev/disk/by-uuid/X becomes
	// /dev/sda1). For device probes (blkid, smartctl, lsblk, mdadm), which
	// open the device themselves and pick their method from its name.
	OpenDevice
)

func (m OpenMode) String() string {
	switch m {
	case OpenFD:
		return "fd"
	case OpenCheckOnly:
		return "check"
	case OpenDevice:
		return "device"
	}
	return "unset"
}

// MarshalText writes the mode as in the policy file.
func (m OpenMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads "fd", "check" or "device".
func (m *OpenMode) UnmarshalText(b []byte) error {
	mode, ok := openModes[string(b)]
	if !ok {
		return fmt.Errorf("open mode %q is not fd, check or device", b)
	}
	*m = mode
	return nil
}

var openModes = map[string]OpenMode{"fd": OpenFD, "check": OpenCheckOnly, "device": OpenDevice}

type valueKind uint8

const (
	vPath valueKind = iota + 1
	vUnit
	vPID
	vUser
	vGroup
	vHost
	vNumber
	vSize
	vDuration
	vTime
	vRegex
	vEnum
	vKeyword
	vString
	vInterface
)

var valueKinds = map[string]valueKind{
	"path": vPath, "unit": vUnit, "pid": vPID, "user": vUser, "group": vGroup,
	"host": vHost, "number": vNumber, "size": vSize, "duration": vDuration,
	"time": vTime, "regex": vRegex, "enum": vEnum, "keyword": vKeyword,
	"string": vString, "interface": vInterface,
}

// valueKeys lists the keys each operand type takes besides "type".
var valueKeys = map[string][]string{
	"path":      {"roots", "open", "char_devices"},
	"unit":      {"suffixes"},
	"pid":       {"list"},
	"user":      {"list"},
	"group":     {"list"},
	"host":      {"loopback_only"},
	"number":    {"min", "max", "plus", "list"},
	"size":      {"max"},
	"duration":  {"max"},
	"time":      {},
	"regex":     {"max_length"},
	"enum":      {"values", "list"},
	"keyword":   {"word"},
	"string":    {"pattern", "max_length"},
	"interface": {},
}

func allValueKeys() []string {
	seen := map[string]bool{"type": true}
	out := []string{"type"}
	for _, keys := range valueKeys {
		for _, k := range keys {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

const (
	defaultMaxLength = 256
	hardMaxLength    = 4096
	maxPID           = 4194304 // PID_MAX_LIMIT on 64-bit Linux
)

// valueSpec is a compiled operand type: what one argument may be.
type valueSpec struct {
	kind     valueKind
	typeName string

	roots   []*pathPattern
	rootSrc []string
	open    OpenMode
	// charDevs lets open: device accept character devices too (an NVMe
	// controller, a SCSI generic node); keep such roots narrow.
	charDevs bool
	suffixes []string
	list     string
	loopback bool
	hasMin   bool
	hasMax   bool
	min, max int64
	plus     bool
	maxDur   time.Duration
	values   map[string]bool
	valueSrc []string
	word     string
	pattern  *regexp.Regexp
	patSrc   string
	maxLen   int
}

// decodeValue reads an operand type from a mapping that may also carry the
// keys in extra (returned by name for the caller).
func (d *decoder) decodeValue(n *yaml.Node, what string, extra ...string) (*valueSpec, map[string]*yaml.Node) {
	known := append(allValueKeys(), extra...)
	m, ok := d.mapping(n, what, known...)
	if m == nil {
		return nil, nil
	}
	tn, has := m["type"]
	if !has {
		d.errorf(n, "%s: missing type (one of %s)", what, strings.Join(sortedKeys(valueKinds), ", "))
		return nil, m
	}
	typ, ok2 := d.str(tn, what+".type")
	if !ok2 {
		return nil, m
	}
	kind, known2 := valueKinds[typ]
	if !known2 {
		d.errorf(tn, "%s: unknown operand type %q (one of %s)", what, typ, strings.Join(sortedKeys(valueKinds), ", "))
		return nil, m
	}
	v := &valueSpec{kind: kind, typeName: typ, maxLen: defaultMaxLength}
	for k, kn := range m {
		if k == "type" || contains(extra, k) || contains(valueKeys[typ], k) {
			continue
		}
		d.errorf(kn, "%s: %s does not apply to type %s (it takes: %s)", what, k, typ, strings.Join(append([]string{"type"}, valueKeys[typ]...), ", "))
		ok = false
	}
	if !d.fillValue(v, m, what) || !ok {
		return nil, m
	}
	return v, m
}

func (d *decoder) fillValue(v *valueSpec, m map[string]*yaml.Node, what string) bool {
	ok := true
	if n, has := m["roots"]; has {
		roots, ok2 := d.strs(n, what+".roots")
		ok = ok && ok2
		for _, r := range roots {
			alts, err := expandBraces(r)
			if err != nil {
				d.errorf(n, "%s.roots: %v", what, err)
				ok = false
				continue
			}
			for _, a := range alts {
				p, err := compilePathPattern(a)
				if err != nil {
					d.errorf(n, "%s.roots: %v", what, err)
					ok = false
					continue
				}
				v.roots = append(v.roots, p)
				v.rootSrc = append(v.rootSrc, a)
			}
		}
	}
	if v.kind == vPath {
		if len(v.rootSrc) == 0 && ok {
			d.errorf(m["type"], "%s: type path needs roots (the directories it may name)", what)
			ok = false
		}
		n, has := m["open"]
		if !has {
			d.errorf(m["type"], "%s: type path needs open: fd (the broker opens the file and passes a descriptor), open: check (the broker checks and passes the path) or open: device (a block device the broker checks and passes by its own path)", what)
			ok = false
		} else if s, ok2 := d.str(n, what+".open"); ok2 {
			mode, known := openModes[s]
			if !known {
				d.errorf(n, "%s.open: %q is not fd, check or device", what, s)
				ok = false
			}
			v.open = mode
		} else {
			ok = false
		}
	}
	if n, has := m["char_devices"]; has {
		b, ok2 := d.boolean(n, what+".char_devices")
		if ok2 && v.open != OpenDevice {
			d.errorf(n, "%s.char_devices: only open: device takes it", what)
			ok2 = false
		}
		v.charDevs, ok = b, ok && ok2
	}
	if n, has := m["suffixes"]; has {
		s, ok2 := d.strs(n, what+".suffixes")
		for _, x := range s {
			if !unitTypes[x] {
				d.errorf(n, "%s.suffixes: %q is not a unit type (%s)", what, x, strings.Join(sortedKeys(unitTypes), ", "))
				ok2 = false
			}
		}
		v.suffixes, ok = s, ok && ok2
	}
	if n, has := m["list"]; has {
		s, ok2 := d.str(n, what+".list")
		if ok2 && (len(s) != 1 || !strings.Contains(",:;+", s)) {
			d.errorf(n, "%s.list: the separator must be one of , : ; +", what)
			ok2 = false
		}
		v.list, ok = s, ok && ok2
	}
	if n, has := m["loopback_only"]; has {
		b, ok2 := d.boolean(n, what+".loopback_only")
		v.loopback, ok = b, ok && ok2
	}
	if n, has := m["plus"]; has {
		b, ok2 := d.boolean(n, what+".plus")
		v.plus, ok = b, ok && ok2
	}
	if n, has := m["min"]; has {
		i, ok2 := d.integer(n, what+".min")
		v.min, v.hasMin, ok = i, true, ok && ok2
	}
	if n, has := m["max"]; has {
		ok = d.fillMax(v, n, what) && ok
	}
	if v.hasMin && v.hasMax && v.min > v.max {
		d.errorf(m["min"], "%s: min %d is above max %d", what, v.min, v.max)
		ok = false
	}
	if n, has := m["values"]; has {
		vals, ok2 := d.strs(n, what+".values")
		v.values = map[string]bool{}
		for _, x := range vals {
			if x == "" || badArgRune(x) != "" {
				d.errorf(n, "%s.values: %q is not a plain value", what, x)
				ok2 = false
			}
			v.values[x] = true
			v.valueSrc = append(v.valueSrc, x)
		}
		ok = ok && ok2
	}
	if v.kind == vEnum && len(v.values) == 0 && ok {
		d.errorf(m["type"], "%s: type enum needs values", what)
		ok = false
	}
	if n, has := m["word"]; has {
		w, ok2 := d.str(n, what+".word")
		v.word, ok = w, ok && ok2
	}
	if v.kind == vKeyword && v.word == "" && ok {
		d.errorf(m["type"], "%s: type keyword needs word", what)
		ok = false
	}
	if n, has := m["max_length"]; has {
		i, ok2 := d.integer(n, what+".max_length")
		if ok2 && (i < 1 || i > hardMaxLength) {
			d.errorf(n, "%s.max_length: %d is outside 1..%d", what, i, hardMaxLength)
			ok2 = false
		}
		v.maxLen, ok = int(i), ok && ok2
	}
	if n, has := m["pattern"]; has {
		s, ok2 := d.str(n, what+".pattern")
		if ok2 {
			re, err := compilePattern(s, d.patternsSeen())
			if err != nil {
				d.errorf(n, "%s.pattern: %v", what, err)
				ok2 = false
			}
			v.pattern, v.patSrc = re, s
		}
		ok = ok && ok2
	}
	if v.kind == vString && v.pattern == nil && ok {
		d.errorf(m["type"], "%s: type string needs pattern (an anchored regular expression every value must match)", what)
		ok = false
	}
	return ok
}

func (d *decoder) fillMax(v *valueSpec, n *yaml.Node, what string) bool {
	switch v.kind {
	case vSize:
		s, ok := d.str(n, what+".max")
		if !ok {
			return false
		}
		b, err := parseSize(s)
		if err != nil {
			d.errorf(n, "%s.max: %v", what, err)
			return false
		}
		v.max, v.hasMax = b, true
	case vDuration:
		s, ok := d.str(n, what+".max")
		if !ok {
			return false
		}
		dur, err := parseDuration(s, false)
		if err != nil {
			d.errorf(n, "%s.max: %v", what, err)
			return false
		}
		v.maxDur, v.hasMax = dur, true
	default:
		i, ok := d.integer(n, what+".max")
		if !ok {
			return false
		}
		v.max, v.hasMax = i, true
	}
	return true
}

var unitTypes = map[string]bool{
	"service": true, "socket": true, "target": true, "device": true, "mount": true,
	"automount": true, "swap": true, "timer": true, "path": true, "slice": true, "scope": true,
}

// check returns why s is not a valid value, or "". Path values are judged
// by the matcher, which also records them.
//
// A ".." path component is refused in every value, whatever the rule's
// pattern admits: a value that is not a typed path is never resolved by
// the broker, so a tool given "/dev/../tmp/x" would walk out of what the
// pattern seemed to promise (blkid, smartctl and lsblk all open what they
// are given). Values that name files are typed paths; text values have no
// use for "..".
func (v *valueSpec) check(s string) string {
	if bad := badArgRune(s); bad != "" {
		return bad
	}
	if hasDotDot(s) {
		return fmt.Sprintf("%q: a \"..\" path component is never allowed in an operand or option value (name files by their absolute path)", s)
	}
	if v.list != "" && v.kind != vPath {
		if s == "" {
			return "empty list"
		}
		for _, item := range strings.Split(s, v.list) {
			if r := v.checkOne(item); r != "" {
				return r
			}
		}
		return ""
	}
	return v.checkOne(s)
}

// hasDotDot reports whether s has ".." as a slash-separated component
// ("..", "../x", "x/..", "/a/../b"). "err..crit" (a journalctl priority
// range) is not a path component and passes.
func hasDotDot(s string) bool {
	for c := range strings.SplitSeq(s, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}

func (v *valueSpec) checkOne(s string) string {
	switch v.kind {
	case vUnit:
		return checkUnit(s, v.suffixes)
	case vPID:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || !isDigits(s) || n < 1 || n > maxPID {
			return fmt.Sprintf("%q is not a process id (1..%d)", s, maxPID)
		}
	case vUser, vGroup:
		return checkAccount(s, v.typeName)
	case vHost:
		return checkHost(s, v.loopback)
	case vNumber:
		return v.checkNumber(s)
	case vSize:
		b, err := parseSize(s)
		if err != nil {
			return err.Error()
		}
		if v.hasMax && b > v.max {
			return fmt.Sprintf("size %s is above the allowed %s", s, formatSize(v.max))
		}
	case vDuration:
		dur, err := parseDuration(s, true)
		if err != nil {
			return err.Error()
		}
		if v.hasMax && dur > v.maxDur {
			return fmt.Sprintf("duration %s is above the allowed %s", s, v.maxDur)
		}
	case vTime:
		return checkTimeSpec(s)
	case vRegex:
		return checkRegex(s, v.maxLen)
	case vEnum:
		if !v.values[s] {
			return fmt.Sprintf("%q is not one of: %s", s, strings.Join(v.valueSrc, ", "))
		}
	case vKeyword:
		if s != v.word {
			return fmt.Sprintf("%q is not %q", s, v.word)
		}
	case vString:
		if len(s) > v.maxLen {
			return fmt.Sprintf("longer than %d bytes", v.maxLen)
		}
		if !matchesWhole(v.pattern, s) {
			return fmt.Sprintf("%q does not match the allowed form %s", s, v.patSrc)
		}
	case vInterface:
		return checkInterface(s)
	}
	return ""
}

func (v *valueSpec) checkNumber(s string) string {
	t := s
	if strings.HasPrefix(t, "+") {
		if !v.plus {
			return fmt.Sprintf("%q: a leading + is not allowed here", s)
		}
		t = t[1:]
	}
	neg := strings.HasPrefix(t, "-")
	if neg {
		t = t[1:]
	}
	if !isDigits(t) || len(t) > 18 {
		return fmt.Sprintf("%q is not a whole number", s)
	}
	n, _ := strconv.ParseInt(t, 10, 64)
	if neg {
		n = -n
	}
	switch {
	case v.hasMin && n < v.min:
		return fmt.Sprintf("%s is below the minimum %d", s, v.min)
	case !v.hasMin && n < 0:
		return fmt.Sprintf("%s: negative numbers are not allowed here", s)
	case v.hasMax && n > v.max:
		return fmt.Sprintf("%s is above the maximum %d", s, v.max)
	}
	return ""
}

func checkUnit(s string, suffixes []string) string {
	if s == "" || len(s) > 256 || s[0] == '-' || s[0] == '.' {
		return fmt.Sprintf("%q is not a systemd unit name", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":_.\\@-", c) >= 0) {
			return fmt.Sprintf("%q is not a systemd unit name (letters, digits and :_.\\@- only; no globs)", s)
		}
	}
	if len(suffixes) == 0 {
		return ""
	}
	suffix := "service"
	if dot := strings.LastIndexByte(s, '.'); dot >= 0 && unitTypes[s[dot+1:]] {
		suffix = s[dot+1:]
	}
	if !contains(suffixes, suffix) {
		return fmt.Sprintf("%q: only %s units are allowed here", s, strings.Join(suffixes, ", "))
	}
	return ""
}

func checkAccount(s, what string) string {
	if isDigits(s) {
		if n, err := strconv.ParseUint(s, 10, 32); err == nil && n < 1<<32-1 {
			return ""
		}
		return fmt.Sprintf("%q is not a %s id", s, what)
	}
	if s == "" || len(s) > 32 {
		return fmt.Sprintf("%q is not a %s name", s, what)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' ||
			i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '-' || c == '$' && i == len(s)-1)
		if !ok {
			return fmt.Sprintf("%q is not a %s name", s, what)
		}
	}
	return ""
}

func checkHost(s string, loopback bool) string {
	if a, err := netip.ParseAddr(s); err == nil {
		if loopback && !a.Unmap().IsLoopback() {
			return fmt.Sprintf("%s is not a loopback address; only 127.0.0.0/8, ::1 and localhost are allowed here", s)
		}
		return ""
	}
	if loopback {
		if s == "localhost" || s == "localhost." {
			return ""
		}
		return fmt.Sprintf("%q: only 127.0.0.0/8, ::1 and localhost are allowed here", s)
	}
	name := strings.TrimSuffix(s, ".")
	if name == "" || len(name) > 253 {
		return fmt.Sprintf("%q is not a host name or address", s)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' {
			return fmt.Sprintf("%q is not a host name or address", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("%q is not a host name or address", s)
			}
		}
	}
	return ""
}

func checkInterface(s string) string {
	if s == "" || len(s) > 15 || s == "." || s == ".." || s[0] == '-' {
		return fmt.Sprintf("%q is not a network interface name", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.:-", c) >= 0) {
			return fmt.Sprintf("%q is not a network interface name", s)
		}
	}
	return ""
}

// gnuEscapes are GNU regex word-boundary escapes that Go's parser lacks.
var gnuEscapes = strings.NewReplacer(`\<`, ``, `\>`, ``, "\\`", ``, `\'`, ``)

// checkRegex bounds a pattern's length and requires it to parse as a
// regular expression (RE2 syntax, which also accepts most POSIX and GNU
// forms; repetition counts above 1000 are refused).
func checkRegex(s string, maxLen int) string {
	if len(s) > maxLen {
		return fmt.Sprintf("pattern longer than %d bytes", maxLen)
	}
	if !strings.ContainsAny(s, `\.+*?()|[]{}^$`) {
		return ""
	}
	if _, err := syntax.Parse(gnuEscapes.Replace(s), syntax.Perl); err != nil {
		return fmt.Sprintf("pattern %q does not parse: %v", s, err)
	}
	return ""
}

// describe says in plain words what the value may be.
func (v *valueSpec) describe() string {
	var s string
	switch v.kind {
	case vPath:
		how := "the broker checks every symlink hop and passes the path"
		switch v.open {
		case OpenFD:
			how = "the broker opens it and passes a file descriptor"
		case OpenDevice:
			how = "a block device; the broker checks every symlink hop and every directory on the way, and passes the device's own path"
			if v.charDevs {
				how = "a block or character device; the broker checks every symlink hop and every directory on the way, and passes the device's own path"
			}
		}
		return fmt.Sprintf("an absolute path under %s (%s)", strings.Join(v.rootSrc, ", "), how)
	case vUnit:
		s = "a systemd unit name"
		if len(v.suffixes) > 0 {
			s += " (" + strings.Join(v.suffixes, ", ") + " units)"
		}
	case vPID:
		s = "a process id"
	case vUser:
		s = "a user name or uid"
	case vGroup:
		s = "a group name or gid"
	case vHost:
		s = "a host name or IP address"
		if v.loopback {
			s = "a loopback address (127.0.0.0/8, ::1 or localhost)"
		}
	case vNumber:
		s = "a whole number"
		switch {
		case v.hasMin && v.hasMax:
			s += fmt.Sprintf(" from %d to %d", v.min, v.max)
		case v.hasMin:
			s += fmt.Sprintf(" of at least %d", v.min)
		case v.hasMax:
			s += fmt.Sprintf(" from 0 to %d", v.max)
		default:
			s += " (0 or more)"
		}
		if v.plus {
			s += ", optionally with a leading +"
		}
	case vSize:
		s = "a size"
		if v.hasMax {
			s += " up to " + formatSize(v.max)
		}
	case vDuration:
		s = "a duration"
		if v.hasMax {
			s += " up to " + v.maxDur.String()
		}
	case vTime:
		s = "a time (today, yesterday, \"1 hour ago\", -2h, 2026-11-25 10:00)"
	case vRegex:
		s = fmt.Sprintf("a regular expression of at most %d bytes", v.maxLen)
	case vEnum:
		s = "one of " + strings.Join(v.valueSrc, ", ")
	case vKeyword:
		s = fmt.Sprintf("the word %q", v.word)
	case vString:
		s = fmt.Sprintf("text matching %s", v.patSrc)
	case vInterface:
		s = "a network interface name"
	}
	if v.list != "" {
		s = fmt.Sprintf("a %q-separated list of: %s", v.list, s)
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return sorted(out)
}
