package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/stack"
)

// Landlock hides other processes' open files from a confined run, so the
// vendor policy's process inspectors (lsof, ss -p) are marked
// inspects_processes and run without a domain: with Landlock on they still
// answer who holds a file and who listens on a port. The same policy with
// the marks removed sees nothing, so the answers are the mark's doing.
func TestProcessInspectorsSeeOtherProcesses(t *testing.T) {
	requireRoot(t)
	if landlockABI() == 0 {
		t.Skip("no Landlock on this kernel: runs are not confined, nothing to show")
	}
	dir, err := stack.WorldReadableTempDir("nannyagent-inspect-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	held := filepath.Join(dir, "held.log")
	f, err := os.Create(held)
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("/bin/sleep", "60")
	holder.Stdout = f
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := []string{"lsof +D " + dir, "ss -tlnp"}
	owner := fmt.Sprintf("pid=%d,", os.Getpid())

	yaml, _ := vendorPolicy(t)
	if !strings.Contains(yaml, "inspects_processes: true") {
		t.Fatal("the vendor policy marks no process inspector")
	}
	rs := asWorker(t, startStack(t, stack.Options{Policy: yaml}), workerRun{}, lines...)
	if r := rs[0]; !ran(r) || !strings.Contains(string(r.GetStdout()), held) {
		t.Errorf("lsof +D with Landlock on: exit %d %q %q, want %s listed", r.GetExitCode(), r.GetStdout(), r.GetStderr(), held)
	}
	if r := rs[1]; !ran(r) || !strings.Contains(string(r.GetStdout()), owner) {
		t.Errorf("ss -tlnp with Landlock on does not name this process (%s): %q", owner, r.GetStdout())
	}

	unmarked := strings.ReplaceAll(yaml, "inspects_processes: true", "")
	rs = asWorker(t, startStack(t, stack.Options{Policy: unmarked}), workerRun{}, lines...)
	if r := rs[0]; strings.Contains(string(r.GetStdout()), held) {
		t.Errorf("without the mark a confined lsof still saw %s: the check above proves nothing", held)
	}
	if r := rs[1]; strings.Contains(string(r.GetStdout()), owner) {
		t.Errorf("without the mark a confined ss still named %s", owner)
	}
}
