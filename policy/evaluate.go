package policy

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/nannyai/nannyagent/policy/cmdline"
)

// Stage is one stage of a pipeline: see cmdline.Stage.
type Stage = cmdline.Stage

// PathOperand is an argv element (or the value part of one) that names a
// file. The broker resolves it one symlink hop at a time with CheckPath and,
// for OpenFD, opens it itself and substitutes Prefix+"/dev/fd/N".
type PathOperand struct {
	// Index is the position in StageDecision.Argv.
	Index int `json:"index"`
	// Prefix is the text before the path in that element ("--file=", "-f");
	// empty when the element is the path.
	Prefix string `json:"prefix,omitempty"`
	// Path is the path as written (absolute).
	Path string `json:"path"`
	// Roots are the allowed roots from the rule.
	Roots []string `json:"roots"`
	Open  OpenMode `json:"open"`
	// CharDevices: with OpenDevice, a character device is accepted too.
	CharDevices bool `json:"char_devices,omitempty"`
}

// StageDecision is the verdict on one stage.
type StageDecision struct {
	Allowed bool   `json:"allowed"`
	RuleID  string `json:"rule_id,omitempty"`
	Reason  string `json:"reason"`
	// Program is the absolute path from the rule.
	Program string `json:"program,omitempty"`
	// Argv is the approved argv; Argv[0] is Program.
	Argv []string `json:"argv,omitempty"`
	// RunAs is the account to run as; "" means root.
	RunAs string `json:"run_as,omitempty"`
	// Paths lists every path operand, option values included.
	Paths []PathOperand `json:"paths,omitempty"`
	// Added are the words the rule's add_options put after the program
	// (Argv[1:1+len(Added)]); the request never chose them.
	Added []string `json:"added_options,omitempty"`
	// Writes are the paths the rule lets the program write beneath; every
	// other place is closed to it where the kernel has Landlock.
	Writes []string `json:"writes,omitempty"`
	// InspectsProcesses says the tool reads other processes' open files,
	// maps or I/O counters, which Landlock hides from a confined run, so
	// the pipeline runs without a Landlock domain.
	InspectsProcesses bool `json:"inspects_processes,omitempty"`
}

// Decision is the verdict on a pipeline: allowed only if every stage is.
type Decision struct {
	Allowed bool            `json:"allowed"`
	Reason  string          `json:"reason"`
	Stages  []StageDecision `json:"stages"`
}

const reasonAllowed = "allowed"

// Evaluate judges a pipeline. It trusts nothing about how the stages were
// built: a request that never went through ParseCommandLine is judged the
// same way, and argv[0] resolves only through the rule table, never PATH.
func (p *Policy) Evaluate(stages []Stage) Decision {
	d := Decision{Stages: make([]StageDecision, len(stages))}
	switch {
	case len(stages) == 0:
		d.Reason = "empty command"
		return d
	case len(stages) > p.limits.PipelineStages:
		d.Reason = fmt.Sprintf("a pipeline may have at most %d stages; this one has %d", p.limits.PipelineStages, len(stages))
		for i := range d.Stages {
			d.Stages[i].Reason = d.Reason
		}
		return d
	}
	d.Allowed = true
	for i := range stages {
		d.Stages[i] = p.evalStage(&stages[i])
		if !d.Stages[i].Allowed && d.Allowed {
			d.Allowed = false
			d.Reason = d.Stages[i].Reason
			if len(stages) > 1 {
				d.Reason = fmt.Sprintf("stage %d: %s", i+1, d.Stages[i].Reason)
			}
		}
	}
	if d.Allowed {
		d.Reason = reasonAllowed
		d.refuseUnconfinedFileStages()
	}
	return d
}

// refuseUnconfinedFileStages keeps a pipeline from shedding Landlock for
// stages that touch files: the stages share one domain, so a pipeline with
// an inspects_processes stage runs unconfined as a whole, and a stage beside
// one may then only filter its standard input (no path operand, no writes).
// Otherwise a request could put "pidstat |" in front of any command to lift
// the write wall from it.
func (d *Decision) refuseUnconfinedFileStages() {
	inspector := slices.IndexFunc(d.Stages, func(s StageDecision) bool { return s.InspectsProcesses })
	if inspector < 0 {
		return
	}
	for i, s := range d.Stages {
		if s.InspectsProcesses || (len(s.Paths) == 0 && len(s.Writes) == 0) {
			continue
		}
		reason := fmt.Sprintf("stage %d (rule %s) names files, and stage %d (rule %s) inspects processes, which makes the whole pipeline run without Landlock; beside such a stage only filters of standard input may run",
			i+1, s.RuleID, inspector+1, d.Stages[inspector].RuleID)
		d.Stages[i].Allowed, d.Stages[i].Reason = false, reason
		d.Allowed, d.Reason = false, reason
		return
	}
}

func (p *Policy) evalStage(st *Stage) StageDecision {
	argv := st.Argv
	if len(argv) == 0 || argv[0] == "" {
		return StageDecision{Reason: "empty pipeline stage"}
	}
	prog := argv[0]
	if reason := p.checkStageShape(st); reason != "" {
		return StageDecision{Reason: prog + ": " + reason}
	}
	rules, reason := p.lookup(prog)
	if rules == nil {
		return StageDecision{Reason: reason}
	}
	var m matcher
	var best StageDecision
	bestFail := -1
	subFails, subMissing := 0, 0
	for _, r := range rules {
		m.reset(p, r, r.withoutAdded(argv))
		if m.run() {
			return r.approve(m.argv, m.paths)
		}
		if m.subFail {
			subFails++
		}
		if m.subMissing {
			subMissing++
		}
		if m.fail > bestFail {
			bestFail = m.fail
			best = StageDecision{RuleID: r.id, Program: r.program, Reason: r.base + ": " + m.reason}
		}
	}
	if subFails == len(rules) && len(rules) > 1 {
		best.RuleID = ""
		what := "this subcommand is not allowed"
		if subMissing == len(rules) {
			what = "missing subcommand"
		}
		best.Reason = fmt.Sprintf("%s: %s (allowed: %s)", rules[0].base, what, subcommandSummary(rules))
	}
	return best
}

// withoutAdded drops the rule's added options when the request already
// starts with them, so an approved argv judged again gets the same answer
// (and writing "blkid -c /dev/null" is what the broker runs anyway).
func (r *cmdRule) withoutAdded(argv []string) []string {
	n := len(r.addOptions)
	if n == 0 || len(argv) < 1+n {
		return argv
	}
	for i, w := range r.addOptions {
		if argv[1+i] != w {
			return argv
		}
	}
	out := make([]string, 0, len(argv)-n)
	return append(append(out, argv[0]), argv[1+n:]...)
}

// approve builds the approved stage: the rule's program, the options the
// rule adds, then the request's arguments (path operand indexes shifted to
// match).
func (r *cmdRule) approve(argv []string, paths []PathOperand) StageDecision {
	out := make([]string, 0, len(argv)+len(r.addOptions))
	out = append(out, r.program)
	out = append(out, r.addOptions...)
	out = append(out, argv[1:]...)
	if n := len(r.addOptions); n > 0 {
		for i := range paths {
			paths[i].Index += n
		}
	}
	return StageDecision{Allowed: true, RuleID: r.id, Reason: reasonAllowed, Program: r.program,
		Argv: out, RunAs: r.runAs, Paths: paths, Added: r.addOptions, Writes: r.writes,
		InspectsProcesses: r.inspectsProcesses}
}

// checkStageShape refuses what no rule could allow: oversized argv,
// characters that hide text, a non-ASCII program name, and conflicting
// redirections.
func (p *Policy) checkStageShape(st *Stage) string {
	if st.StderrToNull && st.StderrToStdout {
		return "conflicting redirections: stderr cannot go both to /dev/null and to stdout"
	}
	if len(st.Argv) > p.limits.ArgvCount {
		return fmt.Sprintf("too many arguments (%d; the limit is %d)", len(st.Argv), p.limits.ArgvCount)
	}
	total := 0
	for i, a := range st.Argv {
		total += len(a)
		if bad := badArgRune(a); bad != "" {
			return fmt.Sprintf("argument %d: %s", i, bad)
		}
	}
	if total > p.limits.ArgvBytes {
		return fmt.Sprintf("arguments too long (%d bytes; the limit is %d)", total, p.limits.ArgvBytes)
	}
	if !isPlainASCII(st.Argv[0]) {
		return "a program name must be plain ASCII (look-alike characters are refused)"
	}
	return ""
}

// lookup finds the rules for argv[0]: a bare name through the rule table,
// an absolute path only if it is, once cleaned, a rule's program path.
func (p *Policy) lookup(prog string) ([]*cmdRule, string) {
	if !strings.Contains(prog, "/") {
		if rules := p.byName[prog]; rules != nil {
			return rules, ""
		}
		return nil, fmt.Sprintf("no rule allows program %q", prog)
	}
	if !strings.HasPrefix(prog, "/") {
		return nil, fmt.Sprintf("%q: write the program as a bare name or an absolute path", prog)
	}
	clean := path.Clean(prog)
	if rules := p.byPath[clean]; rules != nil {
		return rules, ""
	}
	if rules := p.byName[path.Base(clean)]; rules != nil {
		return nil, fmt.Sprintf("%q is not the program the policy names (%s); write %s or %s", prog, rules[0].program, rules[0].base, rules[0].program)
	}
	return nil, fmt.Sprintf("no rule allows program %q", prog)
}

func subcommandSummary(rules []*cmdRule) string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rules {
		if len(r.sub) == 0 {
			continue
		}
		words := make([]string, len(r.sub))
		for i, pos := range r.sub {
			words[i] = pos.words[0]
		}
		s := strings.Join(words, " ")
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return strings.Join(out, "; ")
}
