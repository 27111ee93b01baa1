package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// CheckOptions controls Check.
type CheckOptions struct {
	// Strict makes ownership and mode problems errors (the broker's view);
	// otherwise they are warnings, so a working copy can be checked.
	Strict bool
	// WorkerAccount is the worker's account (run_as may not name it).
	WorkerAccount string
}

// CheckResult is what `nannyagent policy check` reports.
type CheckResult struct {
	Valid      bool           `json:"valid"`
	Files      []File         `json:"files"`
	SHA256     string         `json:"sha256,omitempty"`
	RuleCounts map[string]int `json:"rule_counts,omitempty"`
	Errors     []*Error       `json:"errors"`
	Warnings   []string       `json:"warnings"`
}

// Check validates a vendor file and local files as the broker would merge
// them, and reports every problem with its file:line.
func Check(opts CheckOptions, vendor string, locals ...string) CheckResult {
	res := CheckResult{Errors: []*Error{}, Warnings: []string{}}
	for _, path := range append([]string{vendor}, locals...) {
		if err := CheckOwnership(path); err != nil {
			if _, statErr := os.Stat(path); statErr != nil {
				continue // Load reports unreadable files
			}
			if opts.Strict {
				res.Errors = append(res.Errors, &Error{File: path, Msg: strings.TrimPrefix(err.Error(), "policy "+path+": ") + " (the broker refuses it)"})
			} else {
				res.Warnings = append(res.Warnings, err.Error()+": the broker would refuse this file once installed (use --strict to make this an error)")
			}
		}
	}
	p, err := Load(LoadOptions{WorkerAccount: opts.WorkerAccount}, vendor, locals...)
	var list *ErrorList
	switch {
	case errors.As(err, &list):
		res.Errors = append(res.Errors, list.Errs...)
	case err != nil:
		res.Errors = append(res.Errors, &Error{File: vendor, Msg: err.Error()})
	default:
		res.Files, res.SHA256, res.RuleCounts = p.Files(), p.SHA256(), p.RuleCounts()
		res.Warnings = append(res.Warnings, p.Dangers()...)
		res.Warnings = append(res.Warnings, p.lint()...)
	}
	res.Valid = len(res.Errors) == 0
	return res
}

// WriteText writes the result for a person.
func (r CheckResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	for _, e := range r.Errors {
		ew.printf("error: %s\n", e)
	}
	for _, wn := range r.Warnings {
		ew.printf("warning: %s\n", wn)
	}
	if r.Valid {
		ew.printf("policy OK: %d file(s), sha256 %s\n", len(r.Files), r.SHA256)
		for _, f := range r.Files {
			ew.printf("  %-6s %s  %s\n", f.Origin, f.SHA256, f.Path)
		}
	} else {
		ew.printf("policy INVALID: %d error(s)\n", len(r.Errors))
	}
	return ew.err
}

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Dangers lists, in plain words, every opt-in that widens what the broker
// does as root beyond reading: each is a WARNING in explain and check.
func (p *Policy) Dangers() []string {
	var out []string
	src := func(key string) string {
		if s := p.sources[key]; s != "" {
			return " (set at " + s + ")"
		}
		return ""
	}
	if p.traces.AllowRawPrograms {
		out = append(out, "raw bpftrace programs are allowed"+src("traces.allow_raw_programs")+
			": a program written by the model, or by anyone who takes over the worker, can read any file and kernel memory as root, whatever deny_paths say")
	}
	if p.patches.Enabled && p.patches.Mode == PatchTrustBackend {
		out = append(out, "patches run in trust_backend mode"+src("patches.mode")+
			": the NannyAPI backend, and anyone who takes over the worker, can run any script as root on this host"+
			map[bool]string{true: " and in its containers", false: ""}[contains(p.patches.Targets, PatchTargetLXC)])
	}
	if p.patches.Enabled && p.patches.Mode == PatchPinned && len(p.patches.Pinned) > 0 {
		out = append(out, fmt.Sprintf("patches are enabled%s: the %d pinned script(s) can be run as root whenever the backend asks", src("patches.enabled"), len(p.patches.Pinned)))
	}
	out = append(out, p.rebootDangers(src)...)
	for _, d := range p.disabled {
		if d.Section == "deny_paths" {
			out = append(out, fmt.Sprintf("deny_paths rule %s (defined at %s) is disabled by %s: the paths it protected are readable wherever a rule's roots include them", d.ID, d.DefinedAt, d.DisabledBy))
		}
	}
	for _, r := range p.commands {
		if r.disabled {
			continue
		}
		for _, v := range r.values() {
			if contains(v.rootSrc, "/") {
				out = append(out, fmt.Sprintf("rule %s (%s) allows paths anywhere under / (only deny_paths hold it back)", r.id, r.at))
				break
			}
		}
	}
	return out
}

// lint lists mistakes that are not errors.
func (p *Policy) lint() []string {
	var out []string
	if p.patches.Enabled && p.patches.Mode == PatchPinned && len(p.patches.Pinned) == 0 {
		out = append(out, "patches are enabled in pinned mode but no script is pinned: no patch can run")
	}
	if p.patches.Enabled {
		for _, in := range p.patches.Interpreters {
			if _, err := os.Stat(in); err != nil {
				out = append(out, fmt.Sprintf("patches.interpreters: %s does not exist on this host", in))
			}
		}
	}
	out = append(out, p.rebootLint()...)
	seen := map[string]bool{}
	for _, r := range p.commands {
		if r.disabled || seen[r.program] {
			continue
		}
		seen[r.program] = true
		if _, err := os.Stat(r.program); err != nil {
			out = append(out, fmt.Sprintf("rule %s (%s): program %s does not exist on this host", r.id, r.at, r.program))
		}
	}
	return out
}

// TestResult is what `nannyagent policy test` reports for one command line.
type TestResult struct {
	Command string       `json:"command"`
	SHA256  string       `json:"policy_sha256"`
	Allowed bool         `json:"allowed"`
	Reason  string       `json:"reason"`
	Syntax  *SyntaxError `json:"syntax_error,omitempty"`
	Stages  []Stage      `json:"stages,omitempty"`
	// Decision is nil when the line did not parse.
	Decision *Decision `json:"decision,omitempty"`
}

// Test parses a command line and evaluates it, without running anything.
// An unparseable line is a denial with the parser's reason.
func (p *Policy) Test(line string) TestResult {
	res := TestResult{Command: line, SHA256: p.sha256}
	stages, err := ParseCommandLine(line)
	if err != nil {
		var se *SyntaxError
		if errors.As(err, &se) {
			res.Syntax = se
		}
		res.Reason = strings.TrimPrefix(err.Error(), "denied: ")
		return res
	}
	d := p.Evaluate(stages)
	res.Stages, res.Decision = stages, &d
	res.Allowed, res.Reason = d.Allowed, d.Reason
	return res
}

// WriteText writes the decision for a person.
func (r TestResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("command: %s\npolicy sha256: %s\n", r.Command, r.SHA256)
	if r.Syntax != nil {
		ew.printf("not parsed: %s\n", r.Syntax)
		ew.printf("  %s\n  %s^\n", r.Command, strings.Repeat(" ", len([]rune(r.Command[:min(r.Syntax.Offset, len(r.Command))]))))
	}
	if r.Decision != nil {
		for i, sd := range r.Decision.Stages {
			st := r.Stages[i]
			ew.printf("stage %d: %s%s\n", i+1, QuoteArgv(st.Argv), redirections(st))
			if !sd.Allowed {
				ew.printf("  DENIED: %s\n", sd.Reason)
				continue
			}
			who := "root"
			if sd.RunAs != "" {
				who = sd.RunAs
			}
			ew.printf("  allowed by rule %s: runs %s as %s\n", sd.RuleID, QuoteArgv(sd.Argv), who)
			for _, po := range sd.Paths {
				ew.printf("  path operand %s (argument %d, open: %s, roots: %s)\n", po.Path, po.Index, po.Open, strings.Join(po.Roots, ", "))
			}
		}
	}
	if r.Allowed {
		ew.printf("decision: ALLOWED\n")
	} else {
		ew.printf("decision: DENIED: %s\n", r.Reason)
	}
	return ew.err
}

func redirections(st Stage) string {
	var b strings.Builder
	if st.StdoutToNull {
		b.WriteString(" >/dev/null")
	}
	if st.StderrToNull {
		b.WriteString(" 2>/dev/null")
	}
	if st.StderrToStdout {
		b.WriteString(" 2>&1")
	}
	return b.String()
}

// QuoteArgv writes argv as a command line ParseCommandLine reads back to
// the same argv: words that need it are single-quoted.
func QuoteArgv(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		q := quoteWord(a)
		if i == 0 && q == a && strings.Contains(a, "=") {
			q = "'" + a + "'"
		}
		b.WriteString(q)
	}
	return b.String()
}

func quoteWord(a string) string {
	if a == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(a); i++ {
		c := a[i]
		if !(isAlnum(c) || strings.IndexByte("-_./:,+@%^=", c) >= 0) {
			safe = false
			break
		}
	}
	if safe {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
