package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestEvaluateHandBuiltStages: a request that never went through the parser
// is judged the same way; argv[0] resolves only through the rule table.
func TestEvaluateHandBuiltStages(t *testing.T) {
	p := loadExample(t)
	cases := []struct {
		stage Stage
		allow bool
		want  string
	}{
		{Stage{Argv: []string{"cat", "/etc/hosts"}}, true, ""},
		{Stage{Argv: []string{"/usr/bin/cat", "/etc/hosts"}}, true, ""},
		{Stage{Argv: []string{"/usr//bin/./cat", "/etc/hosts"}}, true, ""},
		{Stage{Argv: []string{"/usr/lib/../bin/cat", "/etc/hosts"}}, true, ""},
		{Stage{Argv: []string{"/bin/cat", "/etc/hosts"}}, false, "is not the program the policy names (/usr/bin/cat)"},
		{Stage{Argv: []string{"/tmp/cat", "/etc/hosts"}}, false, "is not the program the policy names"},
		{Stage{Argv: []string{"./cat", "/etc/hosts"}}, false, "bare name or an absolute path"},
		{Stage{Argv: []string{"bin/cat", "/etc/hosts"}}, false, "bare name or an absolute path"},
		{Stage{Argv: []string{"sh", "-c", "cat /etc/hosts"}}, false, `no rule allows program "sh"`},
		{Stage{Argv: []string{"/bin/sh", "-c", "id"}}, false, `no rule allows program "/bin/sh"`},
		{Stage{Argv: []string{"c\u0430t", "/etc/hosts"}}, false, "plain ASCII"},
		{Stage{Argv: []string{"cat ", "/etc/hosts"}}, false, "plain ASCII"},
		{Stage{Argv: []string{"cat", "/etc/hosts\x00/etc/shadow"}}, false, "NUL byte"},
		{Stage{Argv: []string{"grep", "a\nb"}}, false, "control character"},
		{Stage{Argv: []string{"grep", "\u202eab"}}, false, "invisible formatting"},
		{Stage{Argv: []string{"grep", "\xff"}}, false, "invalid UTF-8"},
		{Stage{Argv: []string{}}, false, "empty pipeline stage"},
		{Stage{Argv: []string{""}}, false, "empty pipeline stage"},
		{Stage{Argv: []string{"cat", "/etc/hosts"}, StderrToNull: true, StderrToStdout: true}, false, "conflicting redirections"},
		{Stage{Argv: []string{"cat", "/etc/hosts"}, StdoutToNull: true, StderrToStdout: true}, true, ""},
		// Shell syntax in an argv is just text: no shell ever sees it.
		{Stage{Argv: []string{"grep", "; rm -rf / #", "/var/log/syslog"}}, true, ""},
		{Stage{Argv: []string{"cat", "/var/log/*.log"}}, true, ""},
	}
	for _, c := range cases {
		d := p.Evaluate([]Stage{c.stage})
		if d.Allowed != c.allow {
			t.Errorf("%q: allowed=%v, want %v (%s)", c.stage.Argv, d.Allowed, c.allow, d.Reason)
			continue
		}
		if !c.allow && !strings.Contains(d.Reason, c.want) {
			t.Errorf("%q: reason %q does not mention %q", c.stage.Argv, d.Reason, c.want)
		}
		if c.allow {
			sd := d.Stages[0]
			if sd.Program != "/usr/bin/"+"cat" && sd.Program != "/usr/bin/grep" {
				t.Errorf("%q: program %q", c.stage.Argv, sd.Program)
			}
			if sd.Argv[0] != sd.Program || !reflect.DeepEqual(sd.Argv[1:], c.stage.Argv[1:]) {
				t.Errorf("%q: approved argv %q", c.stage.Argv, sd.Argv)
			}
		}
	}
}

func TestEvaluateLimits(t *testing.T) {
	p := mustLoadYAML(t, `
version: 1
limits: {pipeline_stages: 2, argv_count: 4, argv_bytes: 64}
commands:
  - id: echo
    program: /usr/bin/echo
    operands: [{type: string, pattern: '.*', count: 0-100}]
`)
	if d := decide(t, p, "echo a | echo b"); !d.Allowed {
		t.Errorf("2 stages: %s", d.Reason)
	}
	d := decide(t, p, "echo a | echo b | echo c")
	if d.Allowed || !strings.Contains(d.Reason, "at most 2 stages") || len(d.Stages) != 3 {
		t.Errorf("3 stages: %+v", d)
	}
	if d := decide(t, p, "echo a b c d"); d.Allowed || !strings.Contains(d.Reason, "too many arguments (5; the limit is 4)") {
		t.Errorf("argv_count: %s", d.Reason)
	}
	if d := decide(t, p, "echo "+strings.Repeat("x", 70)); d.Allowed || !strings.Contains(d.Reason, "arguments too long") {
		t.Errorf("argv_bytes: %s", d.Reason)
	}
	if d := p.Evaluate(nil); d.Allowed || d.Reason != "empty command" {
		t.Errorf("no stages: %+v", d)
	}
}

// TestEvaluatePipeline: a pipeline is allowed only if every stage is, and
// the first denied stage gives the reason.
func TestEvaluatePipeline(t *testing.T) {
	p := loadExample(t)
	d := decide(t, p, `journalctl -u nginx --since "1 hour ago" | grep -i error | head -n 50`)
	if !d.Allowed || d.Reason != "allowed" || len(d.Stages) != 3 {
		t.Fatalf("%+v", d)
	}
	for i, want := range []string{"journalctl", "grep", "head"} {
		if d.Stages[i].RuleID != want || !d.Stages[i].Allowed {
			t.Errorf("stage %d: %+v", i, d.Stages[i])
		}
	}
	d = decide(t, p, `cat /var/log/syslog | grep -r x | sh`)
	if d.Allowed || !strings.HasPrefix(d.Reason, "stage 2: grep: option -r") {
		t.Errorf("reason %q", d.Reason)
	}
	if !d.Stages[0].Allowed || d.Stages[1].Allowed || d.Stages[2].Allowed {
		t.Errorf("per-stage verdicts %+v", d.Stages)
	}
	if sd := d.Stages[0]; len(sd.Paths) != 1 || sd.Paths[0].Open != OpenFD || sd.Paths[0].Index != 1 {
		t.Errorf("cat path operand %+v", sd.Paths)
	}
}

func TestEvaluateRunAs(t *testing.T) {
	p := loadExample(t)
	d := decide(t, p, "id")
	if !d.Allowed || d.Stages[0].RunAs != "nobody" {
		t.Errorf("id should run as nobody: %+v", d)
	}
	if d := decide(t, p, "cat /etc/hosts"); d.Stages[0].RunAs != "" {
		t.Errorf("cat runs as %q, want root", d.Stages[0].RunAs)
	}
	// run_as is checked against the worker account given at load time.
	body := "version: 1\ncommands:\n  - id: x\n    program: /usr/bin/x\n    run_as: daemon\n"
	path := writeFile(t, t.TempDir(), "p.yaml", body)
	if _, err := Load(LoadOptions{WorkerAccount: "daemon"}, path); err == nil || !strings.Contains(err.Error(), "worker's account") {
		t.Errorf("run_as = worker account: %v", err)
	}
	if _, err := Load(LoadOptions{WorkerAccount: "nannyagent"}, path); err != nil {
		t.Errorf("run_as daemon with another worker: %v", err)
	}
}

// TestEvaluateMultipleRulesBestReason: with several rules for one program
// the denial comes from the rule that matched furthest.
func TestEvaluateMultipleRulesBestReason(t *testing.T) {
	p := loadExample(t)
	d := decide(t, p, "systemctl status --bogus nginx")
	if d.Allowed || !strings.Contains(d.Reason, "option --bogus") || d.Stages[0].RuleID != "systemctl-status" {
		t.Errorf("%+v", d.Stages[0])
	}
}

// TestEvaluateManyOperands crosses the matcher's fixed operand buffer.
func TestEvaluateManyOperands(t *testing.T) {
	p := mustLoadYAML(t, `
version: 1
commands:
  - id: ls
    program: /usr/bin/ls
    subcommand: [[x]]
    operands:
      - {name: first, type: keyword, word: a}
      - {name: rest, type: path, roots: [/var/log], open: check, count: 0-40}
      - {name: last, type: keyword, word: z}
`)
	argv := []string{"ls", "x", "a"}
	for i := 0; i < 30; i++ {
		argv = append(argv, "/var/log/f"+strings.Repeat("x", i))
	}
	argv = append(argv, "z")
	d := argvDecision(p, argv...)
	if !d.Allowed || len(d.Paths) != 30 || d.Paths[29].Index != 32 {
		t.Fatalf("%d paths, %+v", len(d.Paths), d.Reason)
	}
	argv[20] = "/etc/shadow"
	if d := argvDecision(p, argv...); d.Allowed || !strings.Contains(d.Reason, "/etc/shadow") {
		t.Errorf("operand 18 not judged: %s", d.Reason)
	}
	argv[len(argv)-1] = "y"
	argv[20] = "/var/log/q"
	if d := argvDecision(p, argv...); d.Allowed || !strings.Contains(d.Reason, `"y" is not "z"`) {
		t.Errorf("last operand: %s", d.Reason)
	}
}

// TestEvaluateConcurrent: a loaded policy is read-only and safe to share
// (run with -race).
func TestEvaluateConcurrent(t *testing.T) {
	p := loadExample(t)
	lines := []string{"cat /var/log/syslog | grep -e x", "ps aux", "find /var/log -name x", "grep -r x /etc", "dig @127.0.0.1 localhost"}
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 200; i++ {
				st, _ := ParseCommandLine(lines[(g+i)%len(lines)])
				p.Evaluate(st)
				_ = p.CheckPath("/proc/self/environ", []string{"/proc"})
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}

func TestDecisionJSONRoundTrip(t *testing.T) {
	p := loadExample(t)
	d := decide(t, p, "cat /var/log/syslog | find /var/log -newer /var/log/dpkg.log")
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Decision
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, d) {
		t.Errorf("round trip %s: %+v %v", b, back, err)
	}
	if !strings.Contains(string(b), `"open":"fd"`) || !strings.Contains(string(b), `"open":"check"`) {
		t.Errorf("open modes not spelled out: %s", b)
	}
}
