package policy

import (
	"strings"
	"testing"
)

const rootTouchPolicy = `version: 1
deny_paths:
  - {id: deny-creds, class: credentials, paths: [/etc/secret], reason: a secret}
commands:
  - id: blkid
    program: /usr/sbin/blkid
    add_options: [-c, /dev/null]
    options:
      - {opt: -p}
    operands:
      - {name: device, type: path, roots: ["/dev/sd*", /dev/disk], open: device, count: 0-4}
  - id: smartctl
    program: /usr/sbin/smartctl
    options:
      - {opt: -a}
    operands:
      - {name: device, type: path, roots: ["/dev/nvme*"], open: device, char_devices: true}
  - id: writer
    program: /usr/bin/touch
    writes: [/var/tmp/writer]
    operands:
      - {name: f, type: string, pattern: '/[a-z/.]+'}
  - id: journal
    program: /usr/bin/journalctl
    options:
      - {opt: -p, value: {type: string, pattern: '[a-z]+(\.\.[a-z]+)?'}}
`

// ".." as a path component never passes in a value, whatever the pattern
// admits; a ".." that is not a component (a priority range) does.
func TestDotDotRefusedInEveryValue(t *testing.T) {
	p := mustLoadYAML(t, rootTouchPolicy)
	for _, line := range []string{"touch /dev/../etc/shadow", "touch ../x", "touch /a/..", "touch /.."} {
		if d := decide(t, p, line); d.Allowed || !strings.Contains(d.Reason, `".." path component`) {
			t.Errorf("%s: %+v", line, d)
		}
	}
	for _, line := range []string{"touch /var/tmp/x..y", "journalctl -p err..crit"} {
		if d := decide(t, p, line); !d.Allowed {
			t.Errorf("%s: %s", line, d.Reason)
		}
	}
}

// add_options go right after the program, path operand indexes follow,
// and an argv that already carries them is judged the same.
func TestAddedOptions(t *testing.T) {
	p := mustLoadYAML(t, rootTouchPolicy)
	d := decide(t, p, "blkid -p /dev/sda1")
	if !d.Allowed {
		t.Fatal(d.Reason)
	}
	sd := d.Stages[0]
	if got := strings.Join(sd.Argv, " "); got != "/usr/sbin/blkid -c /dev/null -p /dev/sda1" {
		t.Errorf("approved argv %q", got)
	}
	if len(sd.Paths) != 1 || sd.Paths[0].Index != 4 || sd.Argv[sd.Paths[0].Index] != "/dev/sda1" || sd.Paths[0].Open != OpenDevice {
		t.Errorf("path operand %+v", sd.Paths)
	}
	again := p.Evaluate([]Stage{{Argv: sd.Argv}}).Stages[0]
	if !again.Allowed || strings.Join(again.Argv, " ") != strings.Join(sd.Argv, " ") {
		t.Errorf("the approved argv judged again: %+v", again)
	}
	if d := decide(t, p, "blkid -c /tmp/cache /dev/sda1"); d.Allowed {
		t.Error("a request's own -c was allowed")
	}
	e := p.Explain()
	var buf strings.Builder
	if err := e.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"the broker adds: -c /dev/null", "MAY WRITE beneath: /var/tmp/writer", "EXCEPTION: rule writer", "deny-creds: [class credentials]", "a block or character device"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("explain lacks %q", want)
		}
	}
	if w := decide(t, p, "touch /var/tmp/writer/x").Stages[0].Writes; len(w) != 1 || w[0] != "/var/tmp/writer" {
		t.Errorf("writes not in the decision: %v", w)
	}
}

func TestRootTouchSchemaErrors(t *testing.T) {
	for name, body := range map[string]string{
		"char_devices without device": "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/cat\n    operands:\n      - {name: f, type: path, roots: [/etc], open: fd, char_devices: true}\n",
		"writes with a glob":          "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/cat\n    writes: [/tmp/*]\n",
		"writes of /":                 "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/cat\n    writes: [/]\n",
		"add_options with ..":         "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/cat\n    add_options: [../x]\n",
		"add_options on ps":           "version: 1\ncommands:\n  - id: ps\n    program: /usr/bin/ps\n    grammar: ps\n    add_options: [x]\n",
		"bad class":                   "version: 1\ndeny_paths:\n  - {id: d, class: Not A Class, paths: [/x], reason: r}\n",
		"bad open":                    "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/cat\n    operands:\n      - {name: f, type: path, roots: [/etc], open: block}\n",
	} {
		if _, err := loadYAML(t, body); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

// A rule marked inspects_processes says so in its decision and in explain;
// other rules do not, and the key takes only a boolean.
func TestInspectsProcesses(t *testing.T) {
	p := mustLoadYAML(t, `version: 1
commands:
  - id: lsof
    program: /usr/bin/lsof
    inspects_processes: true
    options:
      - {opt: -n}
  - id: cat
    program: /usr/bin/cat
    operands:
      - {name: f, type: path, roots: [/etc], open: fd}
`)
	if d := decide(t, p, "lsof -n"); !d.Allowed || !d.Stages[0].InspectsProcesses {
		t.Errorf("lsof: %+v", d)
	}
	if d := decide(t, p, "cat /etc/hostname"); !d.Allowed || d.Stages[0].InspectsProcesses {
		t.Errorf("cat: %+v", d)
	}
	var buf strings.Builder
	if err := p.Explain().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"UNCONFINED: rule lsof (/usr/bin/lsof)", "RUNS WITHOUT LANDLOCK"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("explain lacks %q", want)
		}
	}
	if strings.Contains(buf.String(), "UNCONFINED: rule cat") {
		t.Error("explain lists cat as unconfined")
	}
	if _, err := loadYAML(t, "version: 1\ncommands:\n  - id: c\n    program: /usr/bin/lsof\n    inspects_processes: yes please\n"); err == nil {
		t.Error("a non-boolean inspects_processes loaded")
	}
}

// An inspects_processes stage makes its pipeline run without Landlock, so
// a stage beside it that names files or writes is refused; filters of
// standard input are not.
func TestUnconfinedPipelinesOnlyFilter(t *testing.T) {
	p := mustLoadYAML(t, `version: 1
commands:
  - id: lsof
    program: /usr/bin/lsof
    inspects_processes: true
    options:
      - {opt: -n}
  - id: cat
    program: /usr/bin/cat
    operands:
      - {name: f, type: path, roots: [/etc], open: fd, count: 0-1}
  - id: writer
    program: /usr/bin/touch
    writes: [/var/tmp/writer]
`)
	for _, line := range []string{"lsof -n | cat", "cat | lsof -n", "lsof -n"} {
		if d := decide(t, p, line); !d.Allowed {
			t.Errorf("%s: %s", line, d.Reason)
		}
	}
	for _, line := range []string{"lsof -n | cat /etc/hostname", "cat /etc/hostname | lsof -n", "lsof -n | touch"} {
		d := decide(t, p, line)
		if d.Allowed || !strings.Contains(d.Reason, "without Landlock") {
			t.Errorf("%s: allowed=%v %s", line, d.Allowed, d.Reason)
		}
	}
	if d := decide(t, p, "cat /etc/hostname | cat"); !d.Allowed {
		t.Errorf("a confined pipeline with files: %s", d.Reason)
	}
}
