package policy

import (
	"fmt"
	"strings"
	"testing"
)

// requiredPolicy has one rule per grammar with required options: what keeps
// top, ping and crontab bounded or read-only.
const requiredPolicy = `
version: 1
commands:
  - id: top
    program: /usr/bin/top
    options:
      - {opt: [-b, --batch-mode], required: true, description: batch mode (no terminal)}
      - {opt: [-n, --iterations], value: {type: number, min: 1, max: 3}, required: true}
      - {opt: -c}
  - id: ping
    program: /usr/bin/ping
    permute: true
    options:
      - {opt: -c, value: {type: number, min: 1, max: 10}, required: true}
      - {opt: -q}
    operands:
      - {name: host, type: host}
  - id: crontab
    program: /usr/bin/crontab
    options:
      - {opt: -l, required: true, description: list (never replace) a crontab}
      - {opt: -u, value: {type: user}}
  - id: tc
    program: /usr/sbin/tc
    grammar: words
    subcommand: [qdisc, [show]]
    options:
      - {opt: -s, required: true}
  - id: dig
    program: /usr/bin/dig
    grammar: dig
    options:
      - {opt: "@", value: {type: host}, required: true}
      - {opt: +short, required: true}
    operands:
      - {name: name, type: host}
`

func TestRequiredOptions(t *testing.T) {
	p := mustLoadYAML(t, requiredPolicy)
	runDecisionCases(t, p, []decisionCase{
		{"top -b -n 1", true, "top"},
		{"top -bn1", true, "top"},
		{"top -n1 -b -c", true, "top"},
		{"top --batch-mode --iterations=2", true, "top"},
		{"top -b -n 1 -n 2", true, "top"},
		{"top -b", false, "option -n or --iterations is required by rule top (a whole number from 1 to 3)"},
		{"top -n 1", false, "option -b or --batch-mode is required by rule top: batch mode (no terminal)"},
		{"top", false, "option -b or --batch-mode is required"},
		{"top -c", false, "is required"},
		{"top -b -n 9", false, "above the maximum 3"},
		{"ping -c 3 127.0.0.1", true, "ping"},
		{"ping 127.0.0.1 -c 3", true, "ping"},
		{"ping -c3 -q 127.0.0.1", true, "ping"},
		{"ping 127.0.0.1", false, "option -c is required by rule ping"},
		{"ping -q 127.0.0.1", false, "option -c is required"},
		// "-c" given as an operand after -- is not the option.
		{"ping -- -c 127.0.0.1", false, "is required"},
		{"crontab -l", true, "crontab"},
		{"crontab -l -u www-data", true, "crontab"},
		{"crontab -u www-data -l", true, "crontab"},
		{"crontab", false, "option -l is required by rule crontab: list (never replace) a crontab"},
		{"crontab -u www-data", false, "option -l is required"},
		{"tc -s qdisc show", true, "tc"},
		{"tc qdisc show", false, "option -s is required"},
		{"dig @127.0.0.1 +short localhost", true, "dig"},
		{"dig +short localhost", false, "option @ is required"},
		{"dig @127.0.0.1 localhost", false, "option +short is required"},
	})
}

// TestRequiredIsPerRule: a program with several rules is allowed by any one
// whose required options are all present, and the denial of a line that
// misses them names what is missing.
func TestRequiredIsPerRule(t *testing.T) {
	p := mustLoadYAML(t, `
version: 1
commands:
  - id: vmstat-snapshot
    program: /usr/bin/vmstat
    options: [{opt: -s}]
  - id: vmstat-sampled
    program: /usr/bin/vmstat
    options:
      - {opt: -c, value: {type: number, min: 1, max: 5}, required: true}
      - {opt: -s}
`)
	runDecisionCases(t, p, []decisionCase{
		{"vmstat", true, "vmstat-snapshot"},
		{"vmstat -s", true, "vmstat-snapshot"},
		{"vmstat -c 3", true, "vmstat-sampled"},
		{"vmstat -c 9", false, "above the maximum 5"},
	})
}

func TestRequiredDecodeErrors(t *testing.T) {
	var many strings.Builder
	many.WriteString("version: 1\ncommands:\n  - id: many\n    program: /usr/bin/many\n    options:\n")
	for i := 0; i < maxRequired+1; i++ {
		fmt.Fprintf(&many, "      - {opt: --o%d, required: true}\n", i)
	}
	cases := []struct{ body, want string }{
		{`
version: 1
commands:
  - {id: a, program: /usr/bin/a, options: [{opt: -b, required: yes please}]}
`, "required"},
		{many.String(), fmt.Sprintf("at most %d options of one rule can be required", maxRequired)},
	}
	for _, c := range cases {
		_, err := loadYAML(t, c.body)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("load: %v; want an error mentioning %q", err, c.want)
		}
	}
	// false is the default and loads.
	mustLoadYAML(t, "version: 1\ncommands:\n  - {id: a, program: /usr/bin/a, options: [{opt: -b, required: false}]}\n")
}

func TestRequiredExplained(t *testing.T) {
	p := mustLoadYAML(t, requiredPolicy)
	e := p.Explain()
	var found bool
	for _, c := range e.Commands {
		if c.ID != "top" {
			continue
		}
		for _, o := range c.Options {
			if o.Spellings[0] == "-b" && o.Required {
				found = true
			}
			if o.Spellings[0] == "-c" && o.Required {
				t.Errorf("top -c explained as required")
			}
		}
	}
	if !found {
		t.Errorf("top -b not explained as required: %+v", e.Commands)
	}
	var b strings.Builder
	if err := e.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "option -b, --batch-mode (REQUIRED) — batch mode (no terminal)") {
		t.Errorf("explain text does not mark the required option:\n%s", b.String())
	}
}

// TestRequiredRanksLast: when every rule for a program denies a line, the
// reason comes from a rule that describes it, not from one whose required
// option the line leaves out (which would otherwise rank first, having
// read the whole line). Rules that fail at the same argument keep their
// order, so the file rule comes first here.
func TestRequiredRanksLast(t *testing.T) {
	p := mustLoadYAML(t, `
version: 1
deny_paths:
  - {id: deny-shadow, paths: [/etc/shadow], reason: password hashes}
commands:
  - id: grep-file
    program: /usr/bin/grep
    permute: true
    deny_options: [{opt: -R, reason: follows links}]
    operands:
      - {name: pattern, type: regex}
      - {name: file, type: path, roots: [/etc, /var/log], open: fd}
  - id: grep-recursive
    program: /usr/bin/grep
    permute: true
    options: [{opt: -r, required: true}]
    operands:
      - {name: pattern, type: regex}
      - {name: directory, type: path, roots: [/var/log], open: check}
`)
	runDecisionCases(t, p, []decisionCase{
		{"grep root /etc/shadow", false, "deny_paths rule deny-shadow"},
		{"grep -r root /etc", false, "not under the allowed roots (/var/log)"},
		{"grep -R root /var/log", false, "follows links"},
		{"grep root /etc/hosts", true, "grep-file"},
		{"grep -r root /var/log", true, "grep-recursive"},
	})
}

// TestMissingOperandNamed: with too few operands the denial names the slot
// that is short, which is the later one (operands fill slots in order).
func TestMissingOperandNamed(t *testing.T) {
	p := mustLoadYAML(t, `
version: 1
commands:
  - id: iostat
    program: /usr/bin/iostat
    operands:
      - {name: device, type: string, pattern: '[a-z]+', count: 0-8}
      - {name: interval, type: enum, values: ["1"]}
      - {name: count, type: number, min: 1, max: 9}
  - id: grep
    program: /usr/bin/grep
    options: [{opt: -e, value: {type: regex}, fills: pattern}]
    operands:
      - {name: pattern, type: regex}
      - {name: file, type: path, roots: [/var/log], open: fd, count: 1-2}
`)
	runDecisionCases(t, p, []decisionCase{
		{"iostat 1", false, "missing operand: count (a whole number from 1 to 9)"},
		{"iostat", false, "missing operand: interval"},
		// Enough operands: they fill the slots in order (no type guessing).
		{"iostat sda 1", false, `interval: "sda" is not one of: 1`},
		{"iostat sda 1 3", true, "iostat"},
		{"grep x", false, "missing operand: file"},
		{"grep -e x", false, "missing operand: file"},
		{"grep", false, "missing operand: pattern"},
		{"grep -e x /var/log/syslog", true, "grep"},
	})
}
