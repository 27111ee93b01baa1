package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// generatedPolicy is the example policy plus generated rules, 200 command
// rules in all, with a realistic spread of options, operand types and
// deny_paths.
func generatedPolicy(b *testing.B) *Policy {
	b.Helper()
	example, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		b.Fatal(err)
	}
	base := loadExample(b).RuleCounts()["commands"]
	var extra strings.Builder
	extra.WriteString("version: 1\ncommands:\n")
	for i := 0; i < 200-base; i++ {
		fmt.Fprintf(&extra, `  - id: gen-%03d
    program: /usr/bin/tool%03d
    permute: true
    subcommand: [[show, list]]
    options:
      - {opt: [-a, --all, -v, --verbose, -q]}
      - {opt: [-n, --lines], value: {type: number, min: 1, max: 1000}}
      - {opt: [-u, --unit], value: {type: unit}}
      - {opt: --since, value: {type: time}}
      - {opt: [-f, --format], value: {type: enum, values: [json, text, short]}}
    deny_options:
      - {opt: [-r, --recursive], reason: walks trees}
    operands:
      - {name: file, type: path, roots: [/var/log/tool%03d, /etc/tool%03d], open: fd, count: 0-4}
`, i, i, i, i)
	}
	extra.WriteString("deny_paths:\n")
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&extra, "  - {id: gen-deny-%02d, paths: [\"/etc/tool%03d/secret*\", \"/var/lib/tool%03d/keys\"], reason: generated}\n", i, i, i)
	}
	p, err := loadBytes(LoadOptions{WorkerAccount: testWorker}, namedBytes{"example.yaml", example}, namedBytes{"generated.yaml", []byte(extra.String())})
	if err != nil {
		b.Fatal(err)
	}
	if n := p.RuleCounts()["commands"]; n != 200 {
		b.Fatalf("generated %d command rules, want 200", n)
	}
	return p
}

// BenchmarkEvaluate is one decision on a typical three-stage pipeline
// against a 200-rule policy.
func BenchmarkEvaluate(b *testing.B) {
	p := generatedPolicy(b)
	stages, err := ParseCommandLine(`journalctl -u nginx --since "1 hour ago" | grep -i error | head -n 50`)
	if err != nil {
		b.Fatal(err)
	}
	if d := p.Evaluate(stages); !d.Allowed {
		b.Fatal(d.Reason)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Evaluate(stages)
	}
}

// BenchmarkParseAndEvaluate adds parsing the command line to the decision.
func BenchmarkParseAndEvaluate(b *testing.B) {
	p := generatedPolicy(b)
	line := `journalctl -u nginx --since "1 hour ago" | grep -i error | head -n 50`
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		stages, _ := ParseCommandLine(line)
		p.Evaluate(stages)
	}
}

// BenchmarkEvaluatePaths is a decision with path operands judged against
// deny_paths and roots.
func BenchmarkEvaluatePaths(b *testing.B) {
	p := generatedPolicy(b)
	stages, _ := ParseCommandLine(`cat /var/log/syslog /proc/self/task/1/status | grep -e error`)
	if d := p.Evaluate(stages); !d.Allowed {
		b.Fatal(d.Reason)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Evaluate(stages)
	}
}

// BenchmarkEvaluateDenied is a denial (the reason is formatted).
func BenchmarkEvaluateDenied(b *testing.B) {
	p := generatedPolicy(b)
	stages, _ := ParseCommandLine(`grep -r password /etc`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Evaluate(stages)
	}
}

// BenchmarkLoadVendorPolicy is the packaged policy's load, which a
// socket-activated broker pays at every start (make footprint).
func BenchmarkLoadVendorPolicy(b *testing.B) {
	path := filepath.Join("..", "packaging", "policy.yaml")
	for b.Loop() {
		if _, err := Load(LoadOptions{WorkerAccount: "daemon"}, path); err != nil {
			b.Fatal(err)
		}
	}
}
