package broker

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/broker/patch"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// fakePct logs each call (stdin's target, then the arguments,
// tab-separated), keeps a copy of what push received, and runs exec's
// command with the pushed file's container path mapped under root.
const fakePct = `#!/bin/bash
{ printf '%s' "$(readlink /proc/$$/fd/0)"; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> @DIR@/log
root=@DIR@/ct
case $1 in
push) mkdir -p "$root/run" && cat "$3" > "$root$4" && cp "$root$4" @DIR@/pushed ;;
exec) shift 3; args=(); for a in "$@"; do case $a in /run/*) args+=("$root$a") ;; *) args+=("$a") ;; esac; done; exec "${args[@]}" ;;
esac
`

// pctBroker starts a broker whose policy allows containers matching
// vmids through a fake pct; it returns the fake's directory.
func pctBroker(t *testing.T, vmids, sum string) (*testBroker, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: patch runs go through the command runner's cgroups")
	}
	dir := t.TempDir()
	pct := filepath.Join(dir, "pct")
	if err := os.WriteFile(pct, []byte(strings.ReplaceAll(fakePct, "@DIR@", dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	pol := "version: 1\npatches:\n  enabled: true\n  pct: " + pct + "\n  vmids: " + vmids + "\n  pinned:\n    - {id: apk, sha256: " + sum + "}\n"
	b := startBrokerOpts(t, 0, pol, func(c *Config) {
		c.StateDir, c.PatchRunner = state, []string{self, patch.RunnerCommand}
	})
	return b, dir
}

const alpineScript = "#!/bin/sh\necho \"sh=$(readlink /proc/$$/exe) args=$* stdin=$(readlink /proc/$$/fd/0)\"\n"

func TestRunPatchContainer(t *testing.T) {
	b, dir := pctBroker(t, "[\"1??\"]", patch.Sum([]byte(alpineScript)))
	req := patchReq("op1", alpineScript, brokerv1.PatchMode_PATCH_MODE_DRY_RUN, "musl")
	req.Vmid = "105"
	resp, err := b.client.RunPatch(context.Background(), req)
	if err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING || resp.GetRuleId() != "apk" {
		t.Fatalf("run: %v %v", resp, err)
	}
	r := waitPatch(t, b, "op1")
	sh, _ := filepath.EvalSymlinks("/bin/sh")
	if r.GetState() != brokerv1.PatchState_PATCH_STATE_FINISHED || r.GetExitCode() != 0 ||
		string(r.GetStdout()) != "sh="+sh+" args=--dry-run --exclude musl stdin=/dev/null\n" {
		t.Errorf("result %v", r)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "log"))
	dest := "/run/nannyagent-patch-op1"
	want := strings.Join([]string{
		"/dev/null\tpush\t105\t/dev/fd/3\t" + dest,
		"/dev/null\texec\t105\t--\t/bin/sh\t" + dest + "\t--dry-run\t--exclude\tmusl",
		"/dev/null\texec\t105\t--\t/bin/rm\t-f\t--\t" + dest, ""}, "\n")
	if string(log) != want {
		t.Errorf("pct calls:\n%s\nwant:\n%s", log, want)
	}
	if pushed, _ := os.ReadFile(filepath.Join(dir, "pushed")); string(pushed) != alpineScript {
		t.Errorf("pushed %q", pushed)
	}
	if _, err := os.Stat(filepath.Join(dir, "ct", dest)); !os.IsNotExist(err) {
		t.Errorf("pushed file left behind: %v", err)
	}
	if l := b.log.String(); !strings.Contains(l, `"program":"`+filepath.Join(dir, "pct")+`","argv":["exec","105","--","/bin/sh","/run/nannyagent-patch-op1"`) {
		t.Errorf("decision log lacks the container run: %s", l)
	}
}

// A vmid the policy does not name is refused before anything is pushed,
// asked with the hash alone or with the bytes.
func TestRunPatchContainerNotNamed(t *testing.T) {
	b, dir := pctBroker(t, "[100, \"2*\"]", patch.Sum([]byte(alpineScript)))
	check := checkReq("op1", alpineScript, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)
	full := patchReq("op1", alpineScript, brokerv1.PatchMode_PATCH_MODE_DRY_RUN)
	for _, req := range []*brokerv1.RunPatchRequest{check, full} {
		req.Vmid = "101"
		resp, err := b.client.RunPatch(context.Background(), req)
		if err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_REFUSED ||
			!strings.Contains(resp.GetReason(), "container 101 is not named") || resp.GetPolicyHint() != "patches:\n  vmids: [\"100\", \"2*\", \"101\"]\n" {
			t.Errorf("vmid 101 (check_only %v): %v %v", req.GetCheckOnly(), resp, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "log")); !os.IsNotExist(err) {
		t.Errorf("pct was called: %v", err)
	}
	// Named: allowed.
	check.Vmid = "250"
	if resp, err := b.client.RunPatch(context.Background(), check); err != nil || resp.GetState() != brokerv1.PatchState_PATCH_STATE_ALLOWED {
		t.Errorf("vmid 250: %v %v", resp, err)
	}
	if l := b.log.String(); !slices.ContainsFunc(strings.Split(l, "\n"), func(s string) bool {
		return strings.Contains(s, `"decision":"deny"`) && strings.Contains(s, "vmid=101")
	}) {
		t.Errorf("refusal not logged with its vmid: %s", l)
	}
}
