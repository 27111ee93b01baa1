package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestSchemaErrors: every class of schema error is refused with file:line.
func TestSchemaErrors(t *testing.T) {
	cmd := func(body string) string {
		return "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/c\n" + body
	}
	cases := []struct {
		name string
		body string
		line int
		want string
	}{
		{"missing version", "commands: []\n", 1, "missing version"},
		{"bad version", "version: 2\n", 1, "version 2 is not supported"},
		{"version as string", "version: \"1\"\n", 1, "expected a whole number"},
		{"empty file", "", 0, "empty policy file"},
		{"yaml syntax", "version: 1\ncommands: [\n", 2, "did not find expected"},
		{"two documents", "version: 1\n---\nversion: 1\n", 2, "one YAML document"},
		{"unknown top key", "version: 1\ncomands: []\n", 2, `unknown key "comands"`},
		{"duplicate key", "version: 1\nversion: 1\n", 2, `key "version" repeats`},
		{"merge key", "version: 1\nmetrics: {<<: {enabled: true}}\n", 2, "merge keys"},
		{"unknown rule key", cmd("    optons: []\n"), 5, `unknown key "optons"`},
		{"missing id", "version: 1\ncommands:\n  - program: /usr/bin/c\n", 3, "missing id"},
		{"bad id", "version: 1\ncommands:\n  - id: Bad Id\n    program: /usr/bin/c\n", 3, "an id is"},
		{"duplicate id", cmd("  - id: c\n    program: /usr/bin/d\n"), 5, `duplicate id "c" (first used at`},
		{"duplicate id across sections", cmd("deny_paths:\n  - {id: c, paths: [/x], reason: r}\n"), 6, `duplicate id "c"`},
		{"missing program", "version: 1\ncommands:\n  - id: c\n", 3, "missing program"},
		{"relative program", "version: 1\ncommands:\n  - id: c\n    program: cat\n", 4, "clean absolute path"},
		{"unclean program", "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/../bin/cat\n", 4, "clean absolute path"},
		{"homoglyph program", "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/\u0441at\n", 4, "plain printable ASCII"},
		{"glob program", "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/c*\n", 4, "no globs"},
		{"unknown grammar", cmd("    grammar: shell\n"), 5, `unknown grammar "shell"`},
		{"grammar for another program", cmd("    grammar: find\n"), 5, "grammar find describes find"},
		{"permute outside getopt", "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/find\n    grammar: find\n    permute: true\n", 6, "only grammar getopt"},
		{"unknown operand type", cmd("    operands:\n      - {type: file}\n"), 6, `unknown operand type "file"`},
		{"missing operand type", cmd("    operands:\n      - {roots: [/x]}\n"), 6, "missing type"},
		{"key for another type", cmd("    operands:\n      - {type: number, roots: [/x]}\n"), 6, "roots does not apply to type number"},
		{"path without roots", cmd("    operands:\n      - {type: path, open: fd}\n"), 6, "needs roots"},
		{"path without open", cmd("    operands:\n      - {type: path, roots: [/x]}\n"), 6, "needs open"},
		{"bad open", cmd("    operands:\n      - {type: path, roots: [/x], open: maybe}\n"), 6, "not fd, check or device"},
		{"relative root", cmd("    operands:\n      - {type: path, roots: [var/log], open: fd}\n"), 6, "must be absolute"},
		{"bad root glob", cmd("    operands:\n      - {type: path, roots: [\"/var/[log\"], open: fd}\n"), 6, "bad glob"},
		{"bad deny glob", "version: 1\ndeny_paths:\n  - {id: d, paths: [\"/etc/[x\"], reason: r}\n", 3, "bad glob"},
		{"double star", "version: 1\ndeny_paths:\n  - {id: d, paths: [\"/etc/**\"], reason: r}\n", 3, "** is not supported"},
		{"deny without reason", "version: 1\ndeny_paths:\n  - {id: d, paths: [/etc]}\n", 3, "missing reason"},
		{"bad string pattern", cmd("    operands:\n      - {type: string, pattern: \"(\"}\n"), 6, "missing closing )"},
		{"string without pattern", cmd("    operands:\n      - {type: string}\n"), 6, "needs pattern"},
		{"enum without values", cmd("    operands:\n      - {type: enum}\n"), 6, "needs values"},
		{"keyword without word", cmd("    operands:\n      - {type: keyword}\n"), 6, "needs word"},
		{"min above max", cmd("    operands:\n      - {type: number, min: 5, max: 1}\n"), 6, "min 5 is above max 1"},
		{"bad size max", cmd("    operands:\n      - {type: size, max: 10X}\n"), 6, "unknown unit"},
		{"bad unit suffix", cmd("    operands:\n      - {type: unit, suffixes: [servce]}\n"), 6, "not a unit type"},
		{"bad list separator", cmd("    operands:\n      - {type: pid, list: \"|\"}\n"), 6, "separator"},
		{"bad count", cmd("    operands:\n      - {type: pid, count: 5-2}\n"), 6, "want N or MIN-MAX"},
		{"max_length too big", cmd("    operands:\n      - {type: regex, max_length: 100000}\n"), 6, "outside 1..4096"},
		{"bool for a string", cmd("    description: true\n"), 5, "expected a string, got boolean true"},
		{"string for a bool", cmd("    permute: yes\n"), 5, "expected true or false"},
		{"option without opt", cmd("    options:\n      - {value: {type: pid}}\n"), 6, "missing opt"},
		{"option listed twice", cmd("    options:\n      - {opt: -n}\n      - {opt: -n}\n"), 7, "listed twice"},
		{"single-dash long in getopt", cmd("    options:\n      - {opt: -name}\n"), 6, "use grammar: words"},
		{"bad option spelling", cmd("    options:\n      - {opt: \"---x\"}\n"), 6, "not an option spelling"},
		{"optional without value", cmd("    options:\n      - {opt: -n, optional_value: true}\n"), 6, "has no value"},
		{"fills unknown operand", cmd("    options:\n      - {opt: -e, value: {type: regex}, fills: pattern}\n"), 6, `no operand named "pattern"`},
		{"allowed and denied", cmd("    options:\n      - {opt: -r}\n    deny_options:\n      - {opt: -r, reason: walks trees}\n"), 8, "both allowed and denied"},
		{"deny without reason", cmd("    deny_options:\n      - {opt: -r}\n"), 6, "missing reason"},
		{"find -exec listed", "version: 1\ncommands:\n  - id: f\n    program: /usr/bin/find\n    grammar: find\n    options:\n      - {opt: -exec}\n", 7, "never allows it"},
		{"ps multi-letter BSD", "version: 1\ncommands:\n  - id: p\n    program: /bin/ps\n    grammar: ps\n    options:\n      - {opt: aux}\n", 7, "single letters"},
		{"ps non-pid operand", "version: 1\ncommands:\n  - id: p\n    program: /bin/ps\n    grammar: ps\n    operands:\n      - {type: user}\n", 7, "only process ids"},
		{"subcommand in find", "version: 1\ncommands:\n  - id: f\n    program: /usr/bin/find\n    grammar: find\n    subcommand: [x]\n", 6, "has no subcommands"},
		{"optional first subcommand", cmd("    subcommand:\n      - {words: [a], optional: true}\n"), 6, "cannot be optional"},
		{"leading_count type", cmd("    leading_count: {type: pid}\n"), 5, "type number"},
		{"run_as root", cmd("    run_as: root\n"), 5, "leave run_as out to run as root"},
		{"run_as uid 0", cmd("    run_as: \"0\"\n"), 5, "numeric ids are refused"},
		{"run_as uid 00", cmd("    run_as: \"00\"\n"), 5, "numeric ids are refused"},
		{"run_as uid", cmd("    run_as: 999\n"), 5, "numeric ids are refused"},
		{"run_as worker", cmd("    run_as: nannyagent\n"), 5, "the worker's account"},
		{"run_as bad name", cmd("    run_as: \"a b\"\n"), 5, "not a user name"},
		{"same bare name", cmd("  - id: d\n    program: /usr/local/bin/c\n"), 5, "a bare name must name one program"},
		{"limit above cap", "version: 1\nlimits:\n  command_timeout: 1h\n", 3, "above the hard cap 5m0s"},
		{"limit zero", "version: 1\nlimits:\n  pipeline_stages: 0\n", 3, "above zero"},
		{"limit without unit", "version: 1\nlimits:\n  command_timeout: \"10\"\n", 3, "missing or unknown unit"},
		{"limit bad size", "version: 1\nlimits:\n  stdout_bytes: lots\n", 3, "want a whole number of bytes"},
		{"unknown limit", "version: 1\nlimits:\n  timeout: 10s\n", 3, `unknown key "timeout"`},
		{"trace kind", "version: 1\ntraces:\n  rules:\n    - {id: t, kind: uprobe, target: x}\n", 4, `unknown kind "uprobe"`},
		{"trace kinds", "version: 1\ntraces:\n  kinds: [raw]\n", 3, `unknown kind "raw"`},
		{"tracepoint without category", "version: 1\ntraces:\n  rules:\n    - {id: t, kind: tracepoint, target: sched_switch}\n", 4, "category:name"},
		{"trace bad glob", "version: 1\ntraces:\n  rules:\n    - {id: t, kind: kprobe, target: \"tcp_[\"}\n", 4, "not a valid target glob"},
		{"proxmox placeholder", "version: 1\nproxmox:\n  paths:\n    - {id: x, path: \"/nodes/{node}/status\"}\n", 4, "unknown placeholder {node}"},
		{"proxmox glob", "version: 1\nproxmox:\n  paths:\n    - {id: x, path: \"/nodes/*/status\"}\n", 4, "not a plain word"},
		{"pmxcfs relative", "version: 1\nproxmox:\n  pmxcfs_root: etc/pve\n", 3, "clean absolute path"},
		{"patch mode", "version: 1\npatches:\n  mode: yolo\n", 3, "not pinned or trust_backend"},
		{"patch target", "version: 1\npatches:\n  targets: [qemu]\n", 3, "not host or lxc"},
		{"pinned sha", "version: 1\npatches:\n  pinned:\n    - {id: p, sha256: abc}\n", 4, "not 64 hex digits"},
		{"bpftrace relative", "version: 1\ntraces:\n  bpftrace: bpftrace\n", 3, "clean absolute path"},
		{"disable in vendor", "version: 1\ndisable: [x]\n", 2, "only local files may disable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadYAML(t, c.body)
			var list *ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("want *ErrorList, got %v", err)
			}
			found := false
			for _, e := range list.Errs {
				if strings.Contains(e.Msg, c.want) && e.Line == c.line && strings.HasSuffix(e.File, "policy.yaml") {
					found = true
				}
			}
			if !found {
				t.Fatalf("no error at line %d mentioning %q in:\n%v", c.line, c.want, err)
			}
			if c.line > 0 && !strings.Contains(err.Error(), fmt.Sprintf("policy.yaml:%d", c.line)) {
				t.Errorf("message lacks file:line: %v", err)
			}
		})
	}
}

// TestSchemaReportsManyErrors: one load reports every problem it finds.
func TestSchemaReportsManyErrors(t *testing.T) {
	_, err := loadYAML(t, `version: 1
bogus: 1
commands:
  - id: a
    program: rel
  - id: b
    program: /usr/bin/b
    operands:
      - {type: nope}
limits:
  pipeline_stages: 99
`)
	var list *ErrorList
	if !errors.As(err, &list) || len(list.Errs) != 4 {
		t.Fatalf("want 4 errors, got %v", err)
	}
	var lines []int
	for _, e := range list.Errs {
		lines = append(lines, e.Line)
	}
	if fmt.Sprint(lines) != "[2 5 9 11]" {
		t.Errorf("error lines %v, want [2 5 9 11]", lines)
	}
}

// TestSchemaNodeBudget: aliases do not multiply work (the decoder never
// descends into nested lists it does not expect), and a file cannot make it
// visit more than maxNodes nodes.
func TestSchemaNodeBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\ncommands:\n  - id: c\n    program: /usr/bin/c\n    operands:\n      - type: enum\n        values: [")
	for i := 0; i < maxNodes+10; i++ {
		b.WriteString("a,")
	}
	b.WriteString("a]\n")
	_, err := loadYAML(t, b.String())
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Fatalf("node budget: %v", err)
	}
	// A billion-laughs shape in a value position is refused quickly: each
	// level is a list where a string is expected.
	b.Reset()
	b.WriteString("version: 1\ncommands:\n  - id: c\n    program: /usr/bin/c\n    description: &a0 x\n    operands:\n")
	b.WriteString("      - {type: enum, values: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]}\n")
	for i := 2; i < 9; i++ {
		fmt.Fprintf(&b, "      - {type: enum, values: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]}\n", i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	_, err = loadYAML(t, b.String())
	if err == nil || !strings.Contains(err.Error(), "expected a string, got a list") {
		t.Fatalf("nested aliases: %v", err)
	}
}
