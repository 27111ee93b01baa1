package policy

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// pathPattern is a compiled glob over whole path components. It matches a
// path when it matches the path itself or one of its ancestors, so a deny
// entry for a directory covers everything beneath it and a root admits its
// whole subtree. Within a component, * ? and [...] work as in path.Match;
// * never crosses a slash.
type pathPattern struct {
	src   string
	comps []string
	glob  []bool
}

func compilePathPattern(s string) (*pathPattern, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, fmt.Errorf("path pattern %q must be absolute", s)
	}
	if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
		return nil, fmt.Errorf("path pattern %q has a NUL byte or invalid UTF-8", s)
	}
	if path.Clean(s) != s {
		return nil, fmt.Errorf("path pattern %q is not clean (write %q)", s, path.Clean(s))
	}
	p := &pathPattern{src: s}
	if s == "/" {
		return p, nil
	}
	for _, c := range strings.Split(s[1:], "/") {
		if c == "**" {
			return nil, fmt.Errorf("path pattern %q: ** is not supported; a pattern already covers everything beneath what it matches", s)
		}
		if _, err := path.Match(c, ""); err != nil {
			return nil, fmt.Errorf("path pattern %q: bad glob in %q", s, c)
		}
		p.comps = append(p.comps, c)
		p.glob = append(p.glob, strings.ContainsAny(c, `*?[\`))
	}
	return p, nil
}

// matchPrefix reports whether the pattern matches comps or an ancestor.
func (p *pathPattern) matchPrefix(comps []string) bool {
	if len(comps) < len(p.comps) {
		return false
	}
	for i, pc := range p.comps {
		if !p.glob[i] {
			if pc != comps[i] {
				return false
			}
			continue
		}
		if ok, _ := path.Match(pc, comps[i]); !ok {
			return false
		}
	}
	return true
}

// expandBraces turns "/proc/*/{environ,mem}" into its alternatives. Groups
// may not nest; the expansion is bounded.
func expandBraces(s string) ([]string, error) {
	open := strings.IndexByte(s, '{')
	if open < 0 {
		if strings.IndexByte(s, '}') >= 0 {
			return nil, fmt.Errorf("%q: unmatched }", s)
		}
		return []string{s}, nil
	}
	closeRel := strings.IndexByte(s[open:], '}')
	if closeRel < 0 {
		return nil, fmt.Errorf("%q: unmatched {", s)
	}
	inner := s[open+1 : open+closeRel]
	if strings.IndexByte(inner, '{') >= 0 {
		return nil, fmt.Errorf("%q: nested braces are not supported", s)
	}
	if !strings.Contains(inner, ",") {
		return nil, fmt.Errorf("%q: a brace group needs at least two alternatives", s)
	}
	rest, err := expandBraces(s[open+closeRel+1:])
	if err != nil {
		return nil, err
	}
	var out []string
	for _, alt := range strings.Split(inner, ",") {
		for _, r := range rest {
			out = append(out, s[:open]+alt+r)
			if len(out) > 256 {
				return nil, fmt.Errorf("%q expands to too many paths", s)
			}
		}
	}
	return out, nil
}

// PathError says why a path was refused, in words a model can act on.
type PathError struct {
	// Path is the path as written.
	Path string
	// Normalised is the form it was judged in (empty if it could not be
	// normalised).
	Normalised string
	// RuleID names the deny_paths rule that matched, if one did, and
	// Class the class of secret that rule covers.
	RuleID string
	Class  string
	Reason string
}

func (e *PathError) Error() string {
	if e.Normalised != "" && e.Normalised != e.Path {
		return fmt.Sprintf("path %q (read as %q): %s", e.Path, e.Normalised, e.Reason)
	}
	return fmt.Sprintf("path %q: %s", e.Path, e.Reason)
}

// NormalisePath returns the form deny_paths and roots judge: absolute,
// lexically clean (no "..", ".", or repeated slashes), with the /proc
// aliases of one process folded into one spelling: /proc/thread-self and
// /proc/self/task/<tid> become /proc/self, /proc/<pid>/task/<tid> becomes
// /proc/<pid>, and /dev/fd, /dev/stdin, /dev/stdout and /dev/stderr become
// /proc/self/fd/…. A path through a magic link (/proc/<pid>/root, cwd, exe,
// fd/<n>, map_files/<x>) is refused outright: it leads into another
// process's view of the file system.
//
// It works on the string only; the broker still resolves every symlink hop
// and calls CheckPath on each.
func NormalisePath(p string) (string, error) {
	comps, err := normaliseComps(p)
	if err != nil {
		return "", err
	}
	return "/" + strings.Join(comps, "/"), nil
}

func normaliseComps(p string) ([]string, error) {
	if p == "" {
		return nil, &PathError{Path: p, Reason: "empty path"}
	}
	if !strings.HasPrefix(p, "/") {
		return nil, &PathError{Path: p, Reason: "must be an absolute path (the broker runs in /; write the full path, e.g. /var/log/syslog)"}
	}
	if bad := badArgRune(p); bad != "" {
		return nil, &PathError{Path: p, Reason: bad}
	}
	clean := path.Clean(p)
	if clean == "/" {
		return nil, nil
	}
	comps := strings.Split(clean[1:], "/")
	comps = foldDevFD(comps)
	comps = foldProc(comps)
	if magic := magicLink(comps); magic != "" {
		return nil, &PathError{Path: p, Normalised: "/" + strings.Join(comps, "/"), Reason: magic}
	}
	return comps, nil
}

func foldDevFD(c []string) []string {
	if len(c) < 2 || c[0] != "dev" {
		return c
	}
	var fd string
	switch c[1] {
	case "fd":
		out := append([]string{"proc", "self", "fd"}, c[2:]...)
		return out
	case "stdin":
		fd = "0"
	case "stdout":
		fd = "1"
	case "stderr":
		fd = "2"
	default:
		return c
	}
	return append([]string{"proc", "self", "fd", fd}, c[2:]...)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func foldProc(c []string) []string {
	if len(c) < 2 || c[0] != "proc" {
		return c
	}
	if c[1] == "thread-self" {
		c = append([]string{"proc", "self"}, c[2:]...)
	}
	if c[1] != "self" && !isDigits(c[1]) {
		return c
	}
	// /proc/<pid>/task/<tid>/x is the same file as /proc/<pid>/x for every
	// entry a deny rule cares about (environ, mem, root, cwd, fd, ...).
	for len(c) >= 4 && c[2] == "task" && isDigits(c[3]) {
		c = append(c[:2:2], c[4:]...)
	}
	return c
}

// magicLink explains why a /proc path is refused outright, or returns "".
func magicLink(c []string) string {
	if len(c) < 3 || c[0] != "proc" || (c[1] != "self" && !isDigits(c[1])) {
		return ""
	}
	switch c[2] {
	case "root", "cwd", "exe":
		return fmt.Sprintf("/proc/<pid>/%s is a magic link into another process's view of the file system; it is never allowed", c[2])
	case "fd", "map_files":
		if len(c) >= 4 {
			return fmt.Sprintf("/proc/<pid>/%s/<n> is a magic link to whatever file a process has open; it is never allowed", c[2])
		}
	}
	return ""
}

// denyRule is a compiled deny_paths rule.
type denyRule struct {
	id       string
	class    string
	reason   string
	paths    []string
	patterns []*pathPattern
	at       pos
	disabled bool
}

// pathJudge holds the compiled deny_paths, indexed by first component.
type pathJudge struct {
	byFirst map[string][]denyMatch
	wild    []denyMatch
	roots   map[string]*pathPattern
}

type denyMatch struct {
	rule *denyRule
	pat  *pathPattern
}

func newPathJudge(rules []*denyRule) *pathJudge {
	j := &pathJudge{byFirst: map[string][]denyMatch{}, roots: map[string]*pathPattern{}}
	for _, r := range rules {
		if r.disabled {
			continue
		}
		for _, p := range r.patterns {
			m := denyMatch{rule: r, pat: p}
			if len(p.comps) == 0 || p.glob[0] {
				j.wild = append(j.wild, m)
				continue
			}
			j.byFirst[p.comps[0]] = append(j.byFirst[p.comps[0]], m)
		}
	}
	return j
}

func (j *pathJudge) denied(comps []string) *denyRule {
	if len(comps) > 0 {
		for _, m := range j.byFirst[comps[0]] {
			if m.pat.matchPrefix(comps) {
				return m.rule
			}
		}
	}
	for _, m := range j.wild {
		if m.pat.matchPrefix(comps) {
			return m.rule
		}
	}
	return nil
}

func (j *pathJudge) root(s string) (*pathPattern, error) {
	if p, ok := j.roots[s]; ok {
		return p, nil
	}
	return compilePathPattern(s)
}

// CheckPath judges one path: it normalises it (see NormalisePath), refuses
// it if any deny_paths rule matches it or an ancestor, and then requires it
// to lie under one of roots. The broker calls it for the operand and again
// for every symlink hop it resolves. The error is a *PathError.
func (p *Policy) CheckPath(pth string, roots []string) error {
	comps, err := normaliseComps(pth)
	if err != nil {
		return err
	}
	return p.checkComps(pth, comps, roots, nil)
}

func (p *Policy) checkComps(orig string, comps []string, roots []string, compiled []*pathPattern) error {
	if r := p.judge.denied(comps); r != nil {
		return &PathError{Path: orig, Normalised: "/" + strings.Join(comps, "/"), RuleID: r.id,
			Reason: fmt.Sprintf("denied by deny_paths rule %s (%s)", r.id, r.reason), Class: r.class}
	}
	if compiled != nil {
		for _, rp := range compiled {
			if rp.matchPrefix(comps) {
				return nil
			}
		}
	} else {
		for _, r := range roots {
			rp, err := p.judge.root(r)
			if err != nil {
				continue
			}
			if rp.matchPrefix(comps) {
				return nil
			}
		}
	}
	return &PathError{Path: orig, Normalised: "/" + strings.Join(comps, "/"),
		Reason: fmt.Sprintf("not under the allowed roots (%s)", strings.Join(roots, ", "))}
}
