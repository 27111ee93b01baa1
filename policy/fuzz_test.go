package policy

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// renderStages writes stages back as a command line.
func renderStages(stages []Stage) string {
	var parts []string
	for _, st := range stages {
		s := QuoteArgv(st.Argv)
		switch {
		case st.StdoutToNull && st.StderrToNull:
			s += " >/dev/null 2>&1"
		case st.StdoutToNull && st.StderrToStdout:
			s += " 2>&1 >/dev/null"
		case st.StdoutToNull:
			s += " >/dev/null"
		case st.StderrToNull:
			s += " 2>/dev/null"
		case st.StderrToStdout:
			s += " 2>&1"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " | ")
}

// FuzzParseCommandLine: the parser never panics; a refusal carries an
// offset inside the input and a reason; an accepted line has clean
// arguments and reads back the same from its own rendering.
func FuzzParseCommandLine(f *testing.F) {
	for _, s := range []string{
		`journalctl -u nginx --since "1 hour ago" | grep -i error | head -n 50`,
		`ps aux | sort -k3 -nr | head`, `cat /etc/hosts; id`, `cat $(id)`, `a 'b c' "d\"e" f\ g`,
		`cat /x 2>&1 >/dev/null | grep e`, `FOO=1 id`, "c\u0430t", `cat <<EOF`, `find / -name '*' -exec sh {} \;`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		stages, err := ParseCommandLine(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not a *SyntaxError", err)
			}
			if se.Offset < 0 || se.Offset > len(s) || se.Reason == "" {
				t.Fatalf("bad refusal %+v for %q", se, s)
			}
			return
		}
		if len(stages) == 0 {
			t.Fatalf("no stages and no error for %q", s)
		}
		for _, st := range stages {
			if len(st.Argv) == 0 || st.Argv[0] == "" || !isPlainASCII(st.Argv[0]) {
				t.Fatalf("bad program in %q: %q", s, st.Argv)
			}
			for _, a := range st.Argv {
				if bad := badArgRune(a); bad != "" {
					t.Fatalf("argument %q of %q: %s", a, s, bad)
				}
			}
			if st.StderrToNull && st.StderrToStdout {
				t.Fatalf("conflicting redirections from %q", s)
			}
		}
		line := renderStages(stages)
		again, err := ParseCommandLine(line)
		if err != nil || !reflect.DeepEqual(again, stages) {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, stages, line, again, err)
		}
	})
}

// FuzzEvaluate: evaluation never panics, and an allowed decision is stable:
// its approved argv re-evaluates as allowed by the same rule with the same
// path operands, and every path operand is where it says it is.
func FuzzEvaluate(f *testing.F) {
	p := loadExample(f)
	for _, s := range []string{
		"grep\x1f-inm5\x1ferror\x1f/var/log/syslog",
		"journalctl\x1f-u\x1fnginx\x1f--since\x1f1 hour ago\x1egrep\x1f-i\x1ferror\x1ehead\x1f-n\x1f50",
		"ps\x1f-A\x1f-u\x1feve", "ps\x1fauxe", "find\x1f/var/log\x1f-name\x1f*.log\x1f-exec\x1fsh",
		"dig\x1f@127.0.0.1\x1flocalhost\x1f+short", "ip\x1f-br\x1fa\x1fshow\x1fdev\x1flo",
		"cat\x1f/proc/self/task/1/environ", "/usr//bin/cat\x1f/etc/hosts", "head\x1f-5\x1f/var/log/syslog",
		"systemctl\x1f--no-pager\x1fstatus\x1fnginx", "tail\x1f-n\x1f+5\x1f--\x1f/var/log/syslog",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var stages []Stage
		for i, part := range strings.Split(s, "\x1e") {
			st := Stage{Argv: strings.Split(part, "\x1f")}
			st.StdoutToNull = i%2 == 1
			stages = append(stages, st)
		}
		d := p.Evaluate(stages)
		all := len(d.Stages) == len(stages) && len(stages) > 0
		for _, sd := range d.Stages {
			all = all && sd.Allowed
		}
		if d.Allowed != all {
			t.Fatalf("pipeline allowed=%v but stages %+v", d.Allowed, d.Stages)
		}
		if !d.Allowed {
			if d.Reason == "" {
				t.Fatal("denial without a reason")
			}
			return
		}
		for i, sd := range d.Stages {
			checkApproved(t, p, stages[i], sd)
		}
	})
}

func checkApproved(t *testing.T, p *Policy, st Stage, sd StageDecision) {
	t.Helper()
	if !strings.HasPrefix(sd.Program, "/") || sd.Argv[0] != sd.Program || sd.RuleID == "" {
		t.Fatalf("approved stage %+v", sd)
	}
	if !reflect.DeepEqual(sd.Argv[1:], st.Argv[1:]) {
		t.Fatalf("approved argv %q differs from %q", sd.Argv, st.Argv)
	}
	for _, po := range sd.Paths {
		if po.Index <= 0 || po.Index >= len(sd.Argv) || sd.Argv[po.Index] != po.Prefix+po.Path {
			t.Fatalf("path operand %+v does not match argv %q", po, sd.Argv)
		}
		if err := p.CheckPath(po.Path, po.Roots); err != nil {
			t.Fatalf("approved path %q fails CheckPath: %v", po.Path, err)
		}
	}
	again := p.Evaluate([]Stage{{Argv: sd.Argv, StdoutToNull: st.StdoutToNull, StderrToNull: st.StderrToNull, StderrToStdout: st.StderrToStdout}})
	if !again.Allowed || again.Stages[0].RuleID != sd.RuleID || !reflect.DeepEqual(again.Stages[0].Paths, sd.Paths) ||
		!reflect.DeepEqual(again.Stages[0].Argv, sd.Argv) {
		t.Fatalf("approved argv %q re-evaluates as %+v (first: %+v)", sd.Argv, again, sd)
	}
}

// FuzzLoad: the loader never panics; a refusal names the file and says
// what is wrong; an accepted policy explains itself and evaluates.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"version: 1\n",
		"version: 1\ncommands:\n  - id: c\n    program: /usr/bin/c\n    options:\n      - {opt: [-n, --lines], value: {type: number, min: 1}}\n    operands:\n      - {type: path, roots: [/var/log], open: fd, count: 0-2}\n",
		"version: 1\ndeny_paths:\n  - {id: d, paths: [\"/proc/*/{environ,mem}\"], reason: r}\n",
		"version: 1\nlimits: {command_timeout: 5min, stdout_bytes: 1M}\n",
		"version: 1\ntraces: {allow_raw_programs: true, rules: [{id: t, kind: tracepoint, target: \"sched:*\"}]}\n",
		"version: 1\nx: &a [*a]\n",
		"version: 1\ncommands: [{id: t, program: /usr/bin/top, options: [{opt: [-b, --batch-mode], required: true}, {opt: -n, value: {type: number, max: 3}, required: true}]}]\n", "version: 1\ncommands: [{id: p, program: /bin/ps, grammar: ps, options: [{opt: [a, -A]}], deny_options: [{opt: e, reason: env}]}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := loadBytes(LoadOptions{WorkerAccount: testWorker}, namedBytes{"fuzz.yaml", data})
		if err != nil {
			var list *ErrorList
			if !errors.As(err, &list) || len(list.Errs) == 0 {
				t.Fatalf("error %T %v is not a non-empty *ErrorList", err, err)
			}
			for _, e := range list.Errs {
				if e.File != "fuzz.yaml" || e.Msg == "" {
					t.Fatalf("bad error %+v", e)
				}
			}
			return
		}
		again, err := loadBytes(LoadOptions{WorkerAccount: testWorker}, namedBytes{"fuzz.yaml", data})
		if err != nil || again.SHA256() != p.SHA256() {
			t.Fatalf("reload differs: %v", err)
		}
		if err := p.Explain().WriteText(io.Discard); err != nil {
			t.Fatal(err)
		}
		for _, r := range p.commands {
			d := p.Evaluate([]Stage{{Argv: []string{r.base, "-x", "/etc/hosts", "--", "y"}}})
			if d.Allowed {
				checkApproved(t, p, Stage{Argv: []string{r.base, "-x", "/etc/hosts", "--", "y"}}, d.Stages[0])
			}
		}
	})
}
