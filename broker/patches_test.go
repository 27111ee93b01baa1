package broker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nannyai/nannyagent/broker/patch"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// patchBroker starts a broker with a state directory and the policy
// body under "patches:" (plus limits).
func patchBroker(t *testing.T, policyYAML string) (*testBroker, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: patch runs go through the command runner's cgroups")
	}
	state := filepath.Join(t.TempDir(), "state")
	b := startBrokerOpts(t, 0, policyYAML, func(c *Config) { c.StateDir = state })
	return b, state
}

func patchReq(op, script string, mode brokerv1.PatchMode, excl ...string) *brokerv1.RunPatchRequest {
	return &brokerv1.RunPatchRequest{OperationId: op, Script: []byte(script), Sha256: patch.Sum([]byte(script)),
		Mode: mode, Exclusions: excl, ScriptName: "apt-update.sh"}
}

func checkReq(op, script string, mode brokerv1.PatchMode) *brokerv1.RunPatchRequest {
	r := patchReq(op, script, mode)
	r.Script, r.CheckOnly = nil, true
	return r
}

func waitPatch(t *testing.T, b *testBroker, op string) *brokerv1.PatchResultResponse {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		r, err := b.client.PatchResult(context.Background(), &brokerv1.PatchResultRequest{OperationId: op})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("patch %s still running", op)
	return nil
}

const counting = "#!/bin/sh\necho \"ran with: $*\"\necho run >> %s\n"

func TestRunPatchDefaultsRefuse(t *testing.T) {
	b, state := patchBroker(t, "version: 1\n")
	ctx := context.Background()
	marker := filepath.Join(t.TempDir(), "ran")
	script := strings.Replace(counting, "%s", marker, 1)
	for _, req := range []*brokerv1.RunPatchRequest{checkReq("op1", script, brokerv1.PatchMode_PATCH_MODE_DRY_RUN), patchReq("op1", script, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)} {
		resp, err := b.client.RunPatch(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetState() != brokerv1.PatchState_PATCH_STATE_REFUSED || !strings.Contains(resp.GetReason(), "disabled") ||
			!strings.Contains(resp.GetPolicyHint(), "enabled: true") || !strings.Contains(resp.GetPolicyHint(), patch.Sum([]byte(script))) {
			t.Errorf("default policy: %v", resp)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the script ran")
	}
	if entries, _ := os.ReadDir(filepath.Join(state, "patches")); len(entries) != 1 {
		t.Errorf("state directory holds %d entries, want only the lock", len(entries))
	}
	if log := b.log.String(); !strings.Contains(log, `"rpc":"RunPatch","decision":"deny"`) || !strings.Contains(log, "patch script apt-update.sh") {
		t.Errorf("refusal not in the decision log: %s", log)
	}
	_, err := b.client.PatchResult(ctx, &brokerv1.PatchResultRequest{OperationId: "op1"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("result of a refused run: %v", err)
	}
}

func TestRunPatchPinned(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	script := strings.Replace(counting, "%s", marker, 1)
	other := "#!/bin/sh\necho other\n"
	b, _ := patchBroker(t, "version: 1\npatches:\n  enabled: true\n  pinned:\n    - {id: stand-in, sha256: "+patch.Sum([]byte(script))+", name: apt-update.sh}\n")
	ctx := context.Background()

	// An unlisted script is refused before anything else, with the line to add.
	resp, err := b.client.RunPatch(ctx, checkReq("op0", other, brokerv1.PatchMode_PATCH_MODE_DRY_RUN))
	if err != nil {
		t.Fatal(err)
	}
	wantLine := "    - {id: apt-update-" + patch.Sum([]byte(other))[:12] + ", sha256: " + patch.Sum([]byte(other)) + `, name: "apt-update.sh"}`
	if resp.GetState() != brokerv1.PatchState_PATCH_STATE_REFUSED || !strings.Contains(resp.GetPolicyHint(), wantLine) {
		t.Errorf("unpinned check: %v", resp)
	}
	// Apply is not among the default modes.
	if resp, _ := b.client.RunPatch(ctx, checkReq("op1", script, brokerv1.PatchMode_PATCH_MODE_APPLY)); resp.GetState() != brokerv1.PatchState_PATCH_STATE_REFUSED ||
		!strings.Contains(resp.GetPolicyHint(), "modes: [dry-run, apply]") {
		t.Errorf("apply check: %v", resp)
	}
	if resp, _ := b.client.RunPatch(ctx, checkReq("op1", script, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)); resp.GetState() != brokerv1.PatchState_PATCH_STATE_ALLOWED || resp.GetRuleId() != "stand-in" {
		t.Errorf("pinned check: %v", resp)
	}
	// The pinned hash with other bytes: refused, nothing runs.
	forged := patchReq("op1", other, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)
	forged.Sha256 = patch.Sum([]byte(script))
	if resp, _ := b.client.RunPatch(ctx, forged); resp.GetState() != brokerv1.PatchState_PATCH_STATE_REFUSED || !strings.Contains(resp.GetReason(), "hash") {
		t.Errorf("forged bytes: %v", resp)
	}
	resp, err = b.client.RunPatch(ctx, patchReq("op1", script, brokerv1.PatchMode_PATCH_MODE_DRY_RUN, "linux-image-amd64", "openssl"))
	if err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
		t.Fatalf("run: %v %v", resp, err)
	}
	r := waitPatch(t, b, "op1")
	if r.GetState() != brokerv1.PatchState_PATCH_STATE_FINISHED || r.GetExitCode() != 0 ||
		string(r.GetStdout()) != "ran with: --dry-run --exclude linux-image-amd64,openssl\n" || r.GetSha256() != patch.Sum([]byte(script)) {
		t.Errorf("result %v", r)
	}
	// Asked again, the operation is not run a second time.
	resp, err = b.client.RunPatch(ctx, patchReq("op1", script, brokerv1.PatchMode_PATCH_MODE_DRY_RUN))
	if err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_FINISHED {
		t.Errorf("second start: %v %v", resp, err)
	}
	if got, _ := os.ReadFile(marker); string(got) != "run\n" {
		t.Errorf("the script ran %d times", strings.Count(string(got), "run"))
	}
	if resp, _ := b.client.RunPatch(ctx, &brokerv1.RunPatchRequest{OperationId: "op2", Script: []byte(script), Sha256: patch.Sum([]byte(script)),
		Mode: brokerv1.PatchMode_PATCH_MODE_DRY_RUN, Vmid: "100"}); resp.GetState() != brokerv1.PatchState_PATCH_STATE_REFUSED {
		t.Errorf("container target: %v", resp)
	}
	for name, req := range map[string]*brokerv1.RunPatchRequest{
		"no mode":      {OperationId: "op3", Script: []byte(script), Sha256: patch.Sum([]byte(script))},
		"bad id":       {OperationId: "../op", Script: []byte(script), Sha256: patch.Sum([]byte(script)), Mode: brokerv1.PatchMode_PATCH_MODE_DRY_RUN},
		"exclusion":    patchReq("op3", script, brokerv1.PatchMode_PATCH_MODE_DRY_RUN, "-o", "APT::Get::AllowUnauthenticated=1"),
		"no script":    {OperationId: "op3", Sha256: patch.Sum([]byte(script)), Mode: brokerv1.PatchMode_PATCH_MODE_DRY_RUN},
		"short sha256": {OperationId: "op3", Script: []byte(script), Sha256: "abc", Mode: brokerv1.PatchMode_PATCH_MODE_DRY_RUN},
	} {
		if _, err := b.client.RunPatch(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// TestPatchRunKeepsItsOwnLimits: through the real launcher, a patch run
// outlives command_timeout (its deadline is patch_max_runtime), keeps
// patch_output_bytes of each stream, and forks within patch_child_tasks,
// not child_tasks; the record says which limits it met.
func TestPatchRunKeepsItsOwnLimits(t *testing.T) {
	script := "#!/bin/sh\nhead -c 3000 /dev/zero | tr '\\0' x\nhead -c 2000 /dev/zero | tr '\\0' y >&2\nsleep 2\n" +
		"i=0; while [ $i -lt 40 ]; do sleep 1 & i=$((i+1)); done; wait\n"
	b, _ := patchBroker(t, "version: 1\npatches: {enabled: true, mode: trust_backend}\n"+
		"limits: {command_timeout: 1s, child_tasks: 4, patch_output_bytes: 1KiB, patch_child_tasks: 16, patch_max_runtime: 30s}\n")
	resp, err := b.client.RunPatch(context.Background(), patchReq("lim1", script, brokerv1.PatchMode_PATCH_MODE_DRY_RUN))
	if err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
		t.Fatalf("run: %v %v", resp, err)
	}
	r := waitPatch(t, b, "lim1")
	if r.GetState() != brokerv1.PatchState_PATCH_STATE_FINISHED || r.GetTimedOut() {
		t.Fatalf("a 2s patch run under a 1s command_timeout: %v", r)
	}
	if string(r.GetStdout()) != strings.Repeat("x", 1024) || !r.GetStdoutTruncated() || !strings.HasPrefix(string(r.GetStderr()), strings.Repeat("y", 1024)) || !r.GetStderrTruncated() {
		t.Errorf("output: %d bytes (truncated %v), stderr %d bytes (truncated %v)", len(r.GetStdout()), r.GetStdoutTruncated(), len(r.GetStderr()), r.GetStderrTruncated())
	}
	for _, want := range []string{"limits.patch_child_tasks, 16", "output beyond 1024 bytes per stream was dropped (limits.patch_output_bytes)"} {
		if !strings.Contains(r.GetError(), want) {
			t.Errorf("record error %q lacks %q", r.GetError(), want)
		}
	}
}

func TestRunPatchBusyThenNext(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	slow := "#!/bin/sh\nwhile [ ! -e " + release + " ]; do sleep 0.05; done\necho slow\n"
	quick := "#!/bin/sh\necho quick\n"
	b, _ := patchBroker(t, "version: 1\npatches:\n  enabled: true\n  mode: trust_backend\n")
	ctx := context.Background()
	if resp, err := b.client.RunPatch(ctx, patchReq("slow1", slow, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)); err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
		t.Fatalf("slow: %v %v", resp, err)
	}
	resp, err := b.client.RunPatch(ctx, patchReq("quick1", quick, brokerv1.PatchMode_PATCH_MODE_DRY_RUN))
	if err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_BUSY || !strings.Contains(resp.GetReason(), "slow1") {
		t.Errorf("second run while one goes: %v %v", resp, err)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := waitPatch(t, b, "slow1"); string(r.GetStdout()) != "slow\n" {
		t.Errorf("slow: %v", r)
	}
	if resp, err := b.client.RunPatch(ctx, patchReq("quick1", quick, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)); err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
		t.Errorf("after the first: %v %v", resp, err)
	}
	waitPatch(t, b, "quick1")
}

// TestPatchRunOutlivesBrokerStopRecord: stopping the broker mid-run kills
// the run (it is the broker's child in this version) and records it as
// interrupted, which a new broker on the same directory reports.
func TestPatchInterruptedByBrokerStop(t *testing.T) {
	b, state := patchBroker(t, "version: 1\npatches:\n  enabled: true\n  mode: trust_backend\n  modes: [apply]\n")
	resp, err := b.client.RunPatch(context.Background(), patchReq("long1", "#!/bin/sh\nsleep 60\n", brokerv1.PatchMode_PATCH_MODE_APPLY))
	if err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
		t.Fatalf("run: %v %v", resp, err)
	}
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	b2 := startBrokerOpts(t, 0, "version: 1\n", func(c *Config) { c.StateDir = state })
	r, err := b2.client.PatchResult(context.Background(), &brokerv1.PatchResultRequest{OperationId: "long1"})
	if err != nil || r.GetState() != brokerv1.PatchState_PATCH_STATE_INTERRUPTED || !strings.Contains(r.GetError(), "outcome is unknown") {
		t.Errorf("after a broker stop: %v %v", r, err)
	}
}

// TestIdleExitWaitsForPatchRun: a socket-activated broker does not exit
// for idleness while a patch runs, and does once it is done.
func TestIdleExitWaitsForPatchRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	release := filepath.Join(t.TempDir(), "release")
	state := filepath.Join(t.TempDir(), "state")
	b := startBrokerOpts(t, 200*time.Millisecond, "version: 1\npatches: {enabled: true, mode: trust_backend}\n", func(c *Config) { c.StateDir = state })
	slow := "#!/bin/sh\nwhile [ ! -e " + release + " ]; do sleep 0.05; done\n"
	if resp, err := b.client.RunPatch(context.Background(), patchReq("slow1", slow, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)); err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
		t.Fatalf("run: %v %v", resp, err)
	}
	time.Sleep(time.Second) // five idle periods
	if strings.Contains(b.log.String(), "idle, exiting") {
		t.Fatal("the broker exited for idleness during a patch run")
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.stopAfterIdle(); err != nil {
		t.Fatal(err)
	}
}
