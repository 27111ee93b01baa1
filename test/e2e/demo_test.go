package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/repo"
)

// TestDemoTellsTheStory runs make demo's program on the binaries the tests
// built and reads its story: the problem it created, a command the policy
// refused with its rule, a trace result (or the reason there is none), a
// resolution naming what the demo created, and the broker's decisions.
func TestDemoTellsTheStory(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	demo := filepath.Join(t.TempDir(), "demo")
	build := exec.Command("go", "build", "-o", demo, "./test/cmd/demo")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "-bin", binDir)
	cmd.Dir = root
	start := time.Now()
	out, err := cmd.CombinedOutput()
	story := string(out)
	if err != nil {
		t.Fatalf("the demo failed: %v\n%s", err, story)
	}
	t.Logf("the demo took %s", time.Since(start).Round(100*time.Millisecond))
	for _, want := range []string{
		"== the problem: a filesystem filling up",
		"started runaway-logger (pid ",
		"  DENIED   cat /etc/ssh/ssh_host_ed25519_key\n           denied by the broker's policy, rule cat:",
		"denied by deny_paths rule deny-ssh-keys",
		"=== DIAGNOSIS COMPLETE ===",
		"what the broker decided for that diagnosis",
		"DENY   RunCommand  rule cat",
		"ALLOW  RunCommand  rule df",
		// lsof, run without a Landlock domain, sees who holds the log.
		"allowed by rule lsof-special",
		"           | runaway-l",
		"reason: cat: file: path \"/etc/ssh/ssh_host_ed25519_key\"",
	} {
		if !strings.Contains(story, want) {
			t.Errorf("the demo does not show %q:\n%s", want, story)
		}
	}
	resolution := story[strings.Index(story, "Root cause:"):]
	resolution = resolution[:strings.Index(resolution, "\n")]
	if !strings.Contains(resolution, "app.log") {
		t.Errorf("the resolution does not name the file the demo filled: %s", resolution)
	}
	if skipped := strings.Contains(story, "the model will not ask for a trace: "); skipped {
		t.Logf("no trace here: %s", story[strings.Index(story, "the model will not ask for a trace: "):][:120])
		return
	}
	for _, want := range []string{
		"  traced   writers: tracepoint:syscalls:sys_enter_write\n",
		"top processes: ",
		"ALLOW  RunTrace    rule trace-syscalls-enter",
	} {
		if !strings.Contains(story, want) {
			t.Errorf("the demo does not show %q:\n%s", want, story)
		}
	}
	if !strings.Contains(resolution, "runaway-logger (pid ") {
		t.Errorf("the resolution does not name the process the trace found: %s", resolution)
	}
}
