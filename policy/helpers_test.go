package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testWorker = "nannyagent"

// loadExample loads testdata/example.yaml, the commented test policy.
func loadExample(t testing.TB) *Policy {
	t.Helper()
	p, err := Load(LoadOptions{WorkerAccount: testWorker}, "testdata/example.yaml")
	if err != nil {
		t.Fatalf("load example policy: %v", err)
	}
	return p
}

// writeFile writes a policy file into dir and returns its path.
func writeFile(t testing.TB, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadYAML loads one vendor policy written from body.
func loadYAML(t testing.TB, body string) (*Policy, error) {
	t.Helper()
	return Load(LoadOptions{WorkerAccount: testWorker}, writeFile(t, t.TempDir(), "policy.yaml", body))
}

// mustLoadYAML loads body or fails the test.
func mustLoadYAML(t testing.TB, body string) *Policy {
	t.Helper()
	p, err := loadYAML(t, body)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return p
}

// decide parses line and evaluates it.
func decide(t testing.TB, p *Policy, line string) Decision {
	t.Helper()
	st, err := ParseCommandLine(line)
	if err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	return p.Evaluate(st)
}

// argvDecision evaluates one hand-built stage.
func argvDecision(p *Policy, argv ...string) StageDecision {
	return p.Evaluate([]Stage{{Argv: argv}}).Stages[0]
}

// decisionCase is one row of a table of command lines and verdicts.
type decisionCase struct {
	line  string
	allow bool
	// want is a substring of the reason (for denials) or the rule id (for
	// allowed lines); empty skips the check.
	want string
}

func runDecisionCases(t *testing.T, p *Policy, cases []decisionCase) {
	t.Helper()
	for _, c := range cases {
		d := decide(t, p, c.line)
		if d.Allowed != c.allow {
			t.Errorf("%q: allowed=%v, want %v (reason: %s)", c.line, d.Allowed, c.allow, d.Reason)
			continue
		}
		if c.want == "" {
			continue
		}
		if c.allow {
			last := d.Stages[len(d.Stages)-1]
			if last.RuleID != c.want {
				t.Errorf("%q: allowed by %q, want rule %q", c.line, last.RuleID, c.want)
			}
		} else if !strings.Contains(d.Reason, c.want) {
			t.Errorf("%q: reason %q does not mention %q", c.line, d.Reason, c.want)
		}
	}
}
