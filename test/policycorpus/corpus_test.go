package policycorpus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/repo"

	"github.com/nannyai/nannyagent/policy"
)

// Thresholds the issue sets for the default policy.
const (
	minDangerous     = 150
	minLegitimate    = 150
	minAllowedShare  = 0.97
	policyRel        = "packaging/policy.yaml"
	execTimeout      = 30 * time.Second
	exitAllowed      = 0
	exitDenied       = 3
	corpusDangerous  = "testdata/dangerous.txt"
	corpusLegitimate = "testdata/legitimate.txt"
)

var (
	// repoRoot is the module root; cli is the nannyagent binary TestMain
	// builds from it.
	repoRoot, cli string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := repo.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, "policycorpus:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "policycorpus-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "policycorpus:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "nannyagent")
	build := exec.Command("go", "build", "-o", bin, "./cmd/nannyagent")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "policycorpus: go build ./cmd/nannyagent: %v\n%s", err, out)
		return 1
	}
	repoRoot, cli = root, bin
	return m.Run()
}

// entry is one corpus line.
type entry = Entry

// readCorpus reads a corpus file or fails the test.
func readCorpus(tb testing.TB, name string) []entry {
	tb.Helper()
	out, err := Read(name)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// verdict is what the policy decided about one corpus line.
type verdict struct {
	entry
	result policy.TestResult
}

// judgeAll asks the policy about every line in process, as `nannyagent
// policy test` does (the same Load options and Policy.Test);
// TestCLIMatchesInProcess pins that the CLI says the same. Starting the CLI
// once per line cost about two minutes of `make test`.
func judgeAll(p *policy.Policy, entries []entry) []verdict {
	out := make([]verdict, len(entries))
	for i, e := range entries {
		out[i] = verdict{entry: e, result: p.Test(e.Cmd)}
	}
	return out
}

// loadPolicy loads the default policy as `nannyagent policy test` loads a
// working copy: no ownership check, the default worker account.
func loadPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.Load(policy.LoadOptions{WorkerAccount: policy.DefaultWorkerAccount}, filepath.Join(repoRoot, policyRel))
	if err != nil {
		t.Fatalf("load %s: %v", policyRel, err)
	}
	return p
}

func TestDangerousCorpus(t *testing.T) {
	entries := readCorpus(t, corpusDangerous)
	if len(entries) < minDangerous {
		t.Fatalf("%s has %d commands; the issue asks for at least %d", corpusDangerous, len(entries), minDangerous)
	}
	p := loadPolicy(t)
	vs := judgeAll(p, entries)
	denied := 0
	for _, v := range vs {
		switch {
		case v.result.Allowed:
			t.Errorf("%s:%d: ALLOWED: %s", corpusDangerous, v.Line, v.Cmd)
		case strings.TrimSpace(v.result.Reason) == "":
			t.Errorf("%s:%d: denied without a reason: %s", corpusDangerous, v.Line, v.Cmd)
		default:
			denied++
		}
	}
	// Every deny_paths rule is exercised by at least one line.
	for _, d := range p.DenyPaths() {
		hit := false
		for _, v := range vs {
			hit = hit || strings.Contains(v.result.Reason, "deny_paths rule "+d.ID+" ")
		}
		if !hit {
			t.Errorf("no dangerous command is denied by deny_paths rule %s; add one per rule", d.ID)
		}
	}
	summary := fmt.Sprintf("dangerous corpus: %d commands, %d denied with a reason, %d allowed", len(vs), denied, len(vs)-denied)
	fmt.Println(summary)
	t.Log(summary)
}

func TestLegitimateCorpus(t *testing.T) {
	entries := readCorpus(t, corpusLegitimate)
	if len(entries) < minLegitimate {
		t.Fatalf("%s has %d commands; the issue asks for at least %d", corpusLegitimate, len(entries), minLegitimate)
	}
	vs := judgeAll(loadPolicy(t), entries)
	allowed := 0
	var denied []verdict
	for _, v := range vs {
		if v.result.Allowed {
			allowed++
			continue
		}
		denied = append(denied, v)
	}
	share := float64(allowed) / float64(len(vs))
	summary := fmt.Sprintf("legitimate corpus: %d commands, %d allowed (%.1f%%), %d denied", len(vs), allowed, 100*share, len(denied))
	fmt.Println(summary)
	t.Log(summary)
	for _, v := range denied {
		line := fmt.Sprintf("  denied %s:%d: %s\n    reason: %s", corpusLegitimate, v.Line, v.Cmd, v.result.Reason)
		fmt.Println(line)
		t.Log(line)
	}
	if share < minAllowedShare {
		t.Errorf("only %.1f%% of legitimate commands are allowed; the issue asks for at least %.0f%%", 100*share, 100*minAllowedShare)
	}
}

// cliRun runs the CLI with args and returns its exit code and output.
func cliRun(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exitErr):
		return exitErr.ExitCode(), string(out)
	}
	t.Fatalf("nannyagent %s: %v", strings.Join(args, " "), err)
	return 0, ""
}

// TestCLIMatchesInProcess starts `nannyagent policy test` once in each output
// form, on a denied dangerous line and an allowed legitimate one, and
// requires its exit code and output to be those of the in-process decision
// the corpus tests use, byte for byte.
func TestCLIMatchesInProcess(t *testing.T) {
	p := loadPolicy(t)
	file := filepath.Join(repoRoot, policyRel)
	denied := pick(t, p, corpusDangerous, func(r policy.TestResult) bool {
		// A path denial carries a parsed decision: stages, argv, paths.
		return !r.Allowed && r.Decision != nil && strings.Contains(r.Reason, "deny_paths rule ")
	})
	allowed := pick(t, p, corpusLegitimate, func(r policy.TestResult) bool {
		return r.Allowed && len(r.Stages) > 1
	})
	for _, c := range []struct {
		name   string
		args   []string
		line   string
		exit   int
		render func(policy.TestResult, io.Writer) error
	}{
		{"json", []string{"policy", "test", "--json", file, "--command", denied}, denied, exitDenied,
			func(r policy.TestResult, w io.Writer) error { return policy.WriteJSON(w, r) }},
		{"text", []string{"policy", "test", file, "--command", allowed}, allowed, exitAllowed,
			policy.TestResult.WriteText},
	} {
		t.Run(c.name, func(t *testing.T) {
			var want strings.Builder
			if err := c.render(p.Test(c.line), &want); err != nil {
				t.Fatal(err)
			}
			code, out := cliRun(t, c.args...)
			if code != c.exit {
				t.Errorf("nannyagent policy test %q: exit %d, want %d", c.line, code, c.exit)
			}
			if out != want.String() {
				t.Errorf("nannyagent policy test %q prints\n%s\nthe in-process decision is\n%s", c.line, out, want.String())
			}
		})
	}
}

// pick returns the first line of a corpus whose in-process result matches.
func pick(t *testing.T, p *policy.Policy, corpus string, match func(policy.TestResult) bool) string {
	t.Helper()
	for _, e := range readCorpus(t, corpus) {
		if match(p.Test(e.Cmd)) {
			return e.Cmd
		}
	}
	t.Fatalf("no line of %s fits the CLI check", corpus)
	return ""
}

// TestCheck: the working copy is valid (ownership only warned about), and
// a root-owned 0644 copy passes the strict check the broker applies, while
// a group-writable copy fails it.
func TestCheck(t *testing.T) {
	src := filepath.Join(repoRoot, policyRel)
	if code, out := cliRun(t, "policy", "check", src); code != 0 {
		t.Fatalf("policy check %s: exit %d\n%s", policyRel, code, out)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the strict check requires a root-owned copy")
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	installed := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(installed, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(installed, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(installed, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := cliRun(t, "policy", "check", "--strict", installed)
	if code != 0 || !strings.Contains(out, "policy OK") {
		t.Fatalf("policy check --strict on a root-owned 0644 copy: exit %d\n%s", code, out)
	}
	if err := os.Chmod(installed, 0o664); err != nil {
		t.Fatal(err)
	}
	if code, out := cliRun(t, "policy", "check", "--strict", installed); code != 1 {
		t.Errorf("policy check --strict on a group-writable copy: exit %d, want 1\n%s", code, out)
	}
}

// TestExplain: the reviewer's summary states the closed sections and every
// deny rule, runs filters as nobody, and warns only about the tree walkers
// that may start anywhere.
func TestExplain(t *testing.T) {
	code, out := cliRun(t, "policy", "explain", filepath.Join(repoRoot, policyRel))
	if code != 0 {
		t.Fatalf("policy explain: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		"What this policy lets nannyagent-broker do as root.",
		"raw programs: refused",
		"probe kinds: tracepoint, syscall",
		"Patch scripts:\n  disabled",
		"Reboots:\n  disabled",
		"GET /nodes/{local}/qemu/{vmid}/config",
		"/usr/bin/ps  [rule ps,",
		"as nobody]",
		"option -b, --batch-mode (REQUIRED)",
		"refused -e: procps re-reads -e as BSD e",
		"refused --compress-program: runs a program",
		"refused -f, -F, --follow",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain does not say %q", want)
		}
	}
	p := loadPolicy(t)
	for _, d := range p.DenyPaths() {
		if !strings.Contains(out, "  "+d.ID+": ") {
			t.Errorf("explain does not list deny_paths rule %s", d.ID)
		}
	}
	var warnings []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "WARNING: ") {
			warnings = append(warnings, line)
		}
	}
	for _, w := range warnings {
		ok := false
		for _, id := range []string{"rule du ", "rule ls ", "rule find "} {
			ok = ok || strings.Contains(w, id) && strings.Contains(w, "allows paths anywhere under /")
		}
		if !ok {
			t.Errorf("unexpected warning in the default policy: %s", w)
		}
	}
	if len(warnings) != 3 {
		t.Errorf("want exactly the 3 tree-walker warnings, got %d: %q", len(warnings), warnings)
	}
}
