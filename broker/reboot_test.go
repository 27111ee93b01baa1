package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// fakeRebootTools writes fake systemctl, pct and wall scripts that append
// their argv to a log and exit with the given codes, in a root-owned
// directory the launcher accepts.
func fakeRebootTools(t *testing.T, systemctlExit, pctExit int) (dir, logPath string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the launcher runs only root-owned programs")
	}
	dir = t.TempDir()
	logPath = filepath.Join(dir, "calls.log")
	for name, code := range map[string]int{"systemctl": systemctlExit, "pct": pctExit, "wall": 0} {
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >> %s\necho \"%s failed on purpose\" >&2\nexit %d\n", name, logPath, name, code)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, logPath
}

func rebootPolicy(tools, extra string) string {
	return fmt.Sprintf(`version: 1
reboots:
  enabled: true
  systemctl: %[1]s/systemctl
  pct: %[1]s/pct
  wall: %[1]s/wall
  min_uptime: 0s
%[2]s`, tools, extra)
}

func calls(t *testing.T, logPath string) []string {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// The default policy refuses every reboot and runs nothing; the refusal is
// in the decision log.
func TestRebootRefusedByDefault(t *testing.T) {
	b := startBroker(t, 0)
	for _, req := range []*brokerv1.RebootRequest{
		{RebootId: "rb1", CheckOnly: true}, {RebootId: "rb1"}, {RebootId: "rb2", Vmid: "105"},
	} {
		resp, err := b.client.Reboot(context.Background(), req)
		if err != nil || resp.GetAllowed() || resp.GetStarted() || resp.GetReason() != "reboots: reboots are disabled by policy" {
			t.Errorf("%v: %v %v", req, resp, err)
		}
	}
	if !strings.Contains(b.log.String(), `"rpc":"Reboot","decision":"deny","rule":"no rule"`) ||
		!strings.Contains(b.log.String(), `"reason":"reboots: reboots are disabled by policy"`) {
		t.Errorf("decision log: %s", b.log.String())
	}
}

// Through the socket and the real launcher: a container reboot runs
// `pct reboot VMID` after wall; a vmid the policy does not name is refused;
// the host's loop guard refuses the second host reboot, also after the
// broker restarts on the same state directory.
func TestRebootThroughTheLauncher(t *testing.T) {
	tools, logPath := fakeRebootTools(t, 0, 0)
	b := startBrokerWith(t, 0, rebootPolicy(tools, "  host: true\n  containers: ['105']\n  min_interval: 1h\n"))
	ctx := context.Background()

	resp, err := b.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "rb1", Vmid: "105", CheckOnly: true})
	if err != nil || !resp.GetAllowed() || resp.GetStarted() || resp.GetRuleId() != "reboots.containers[105]" {
		t.Fatalf("check: %v %v", resp, err)
	}
	if got := calls(t, logPath); got != nil {
		t.Fatalf("check-only ran %q", got)
	}
	resp, err = b.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "rb1", Vmid: "105", Reason: "LXC restart"})
	if err != nil || !resp.GetStarted() || !resp.GetWarned() || resp.GetExitCode() != 0 {
		t.Fatalf("container reboot: %v %v", resp, err)
	}
	want := []string{"wall nannyagent: NannyAI reboot rb1 requested by the operator: container 105 reboots now. Reason: LXC restart", "pct reboot 105"}
	if got := calls(t, logPath); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ran %q, want %q", got, want)
	}
	resp, _ = b.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "rb2", Vmid: "106"})
	if resp.GetAllowed() || !strings.Contains(resp.GetReason(), "container 106 is not among the vmids") {
		t.Errorf("vmid 106: %v", resp)
	}

	resp, _ = b.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "rb3"})
	if !resp.GetStarted() || resp.GetRuleId() != "reboots.host" {
		t.Fatalf("host reboot: %v", resp)
	}
	if got := calls(t, logPath); got[len(got)-1] != "systemctl reboot" {
		t.Errorf("ran %q", got)
	}
	if !strings.Contains(b.log.String(), `"reason":"reboot rb3 started"`) {
		t.Errorf("decision log: %s", b.log.String())
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	again := startBrokerInDir(t, filepath.Dir(b.policy))
	resp, _ = again.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "rb4", CheckOnly: true})
	if resp.GetAllowed() || !strings.Contains(resp.GetReason(), "the last host reboot (rb3) was started at") {
		t.Errorf("loop guard after a restart: %v", resp)
	}
}

// A reboot command that fails is reported with its exit status and output.
func TestRebootCommandFails(t *testing.T) {
	tools, _ := fakeRebootTools(t, 1, 2)
	b := startBrokerWith(t, 0, rebootPolicy(tools, "  host: true\n  containers: ['*']\n"))
	resp, err := b.client.Reboot(context.Background(), &brokerv1.RebootRequest{RebootId: "rb1", Vmid: "105"})
	if err != nil || !resp.GetAllowed() || resp.GetStarted() || resp.GetExitCode() != 2 ||
		!strings.Contains(resp.GetReason(), "pct reboot 105 exited with status 2") || resp.GetOutput() != "pct failed on purpose" {
		t.Errorf("%v %v", resp, err)
	}
	if !strings.Contains(b.log.String(), `"decision":"error"`) {
		t.Errorf("decision log: %s", b.log.String())
	}
}

// A patch run in progress, started by this broker's patch manager on the
// shared state directory, holds every reboot back; once it has finished
// the reboot is allowed. The loop guard's record sits in the same
// directory as the patch runs.
func TestRebootWaitsForThePatchRun(t *testing.T) {
	tools, logPath := fakeRebootTools(t, 0, 0)
	release := filepath.Join(t.TempDir(), "release")
	slow := "#!/bin/sh\nwhile [ ! -e " + release + " ]; do sleep 0.05; done\n"
	b, state := patchBroker(t, rebootPolicy(tools, "  host: true\n  containers: ['*']\n")+"patches:\n  enabled: true\n  mode: trust_backend\n")
	ctx := context.Background()
	if resp, err := b.client.RunPatch(ctx, patchReq("slow1", slow, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)); err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
		t.Fatalf("patch run: %v %v", resp, err)
	}
	for _, req := range []*brokerv1.RebootRequest{{RebootId: "rb1", CheckOnly: true}, {RebootId: "rb1"}, {RebootId: "rb2", Vmid: "105"}} {
		resp, err := b.client.Reboot(ctx, req)
		if err != nil || resp.GetAllowed() || !strings.Contains(resp.GetReason(), "a patch run is in progress") {
			t.Errorf("%v during the patch run: %v %v", req, resp, err)
		}
	}
	if got := calls(t, logPath); got != nil {
		t.Fatalf("ran %q during the patch run", got)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitPatch(t, b, "slow1")
	resp, err := b.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "rb3"})
	if err != nil || !resp.GetStarted() {
		t.Fatalf("after the patch run: %v %v", resp, err)
	}
	for _, name := range []string{"patches", "last-host-reboot.json"} {
		if _, err := os.Stat(filepath.Join(state, name)); err != nil {
			t.Errorf("state directory: %v", err)
		}
	}
}

// Without a state directory the loop guard has nowhere to keep its record:
// host reboots are refused, container reboots are not.
func TestRebootWithoutStateDir(t *testing.T) {
	tools, logPath := fakeRebootTools(t, 0, 0)
	b := startBrokerOpts(t, 0, rebootPolicy(tools, "  host: true\n  containers: ['*']\n"), func(c *Config) { c.StateDir = "" })
	ctx := context.Background()
	resp, err := b.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "rb1"})
	if err != nil || resp.GetAllowed() || !strings.Contains(resp.GetReason(), "no state directory (--state-dir)") {
		t.Errorf("host reboot: %v %v", resp, err)
	}
	if resp, err := b.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "rb2", Vmid: "105"}); err != nil || !resp.GetStarted() {
		t.Errorf("container reboot: %v %v", resp, err)
	}
	if got := calls(t, logPath); len(got) != 2 || got[1] != "pct reboot 105" {
		t.Errorf("ran %q", got)
	}
}
