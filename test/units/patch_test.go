package units

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/nspawn"
	"github.com/nannyai/nannyagent/test/repo"
	"github.com/nannyai/nannyagent/test/stack"
)

//go:embed patch_checks.sh
var patchChecks string

// fakePct stands in for Proxmox's pct on a test-only path in the machine:
// it logs each call (where its stdin points, its cgroup, its arguments,
// tab-separated), keeps a copy of what push received, and runs exec's
// command in the machine with the pushed file's container path mapped
// under ct/.
const fakePct = `#!/bin/bash
dir=/opt/fakepct
{ printf '%s\t%s' "$(readlink /proc/$$/fd/0)" "$(grep '^0::' /proc/$$/cgroup)"; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$dir/log"
root=$dir/ct
case $1 in
push) mkdir -p "$root/run" && cat "$3" > "$root$4" && cp "$root$4" "$dir/pushed" ;;
exec) shift 3; args=(); for a in "$@"; do case $a in /run/*) args+=("$root$a") ;; *) args+=("$a") ;; esac; done; exec "${args[@]}" ;;
esac
`

// patchConfig points the worker at patchbed inside the machine and polls
// runs every second.
const patchConfig = `nannyapi_url: "http://127.0.0.1:8089"
portal_url: "http://127.0.0.1:8089"
token_path: /var/lib/nannyagent/token.json
patch_poll_interval: 1s
`

// patchPolicy pins the fake's stand-in apt-update.sh, allows apply, puts
// the fake apt-get first on the run's PATH, and sets the limits the
// transient unit must show.
func patchPolicy() string {
	return `version: 1
patches:
  enabled: true
  modes: [dry-run, apply]
  path: /opt/fakeapt:/usr/sbin:/usr/bin:/sbin:/bin
  pct: /opt/fakepct/pct
  vmids: ["105"]
  pinned:
    - {id: stand-in, sha256: ` + sha256Hex(fakeapi.StandInAptUpdate()) + `, name: apt-update.sh}
limits:
  patch_max_runtime: 17m
  patch_child_memory: 1536MiB
  patch_child_tasks: 768
`
}

// TestBootedPatchOutlivesRestart: with systemd as PID 1 a patch run is a
// transient unit of its own with the policy's limits; restarting both
// services (as a package upgrade does) leaves it running, the new broker
// finds it again, and the new worker uploads its result once.
func TestBootedPatchOutlivesRestart(t *testing.T) {
	nspawn.Require(t)
	ctx := context.Background()
	bin, err := stack.Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	if err := buildPatchbed(ctx, bin); err != nil {
		t.Fatal(err)
	}
	base, _, err := nspawn.Base(ctx, nspawn.RootfsOptions{Include: nspawn.AgentInclude, Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	m := nspawn.NewMachine(t, base)
	if err := m.InstallAgent(ctx, nspawn.Agent{BinDir: bin, Config: patchConfig,
		LocalPolicy: map[string]string{"50-patches.yaml": patchPolicy()}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Install(filepath.Join(bin, "patchbed"), "/usr/local/bin/patchbed", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/opt/fakepct/pct", []byte(fakePct), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/opt/fakeapt/apt-get", fakeapi.FakeAptGet(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/opt/fakeapt/upgradable", []byte("openssl 3.0.11-1~deb12u1 3.0.11-1~deb12u2\nlibc6 2.36-9 2.36-9+deb12u3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := m.Boot(ctx, nspawn.BootOptions{Checks: patchChecks, Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	b := booted{t: t, res: res}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, name := range []string{"failed", "checks.log", "journal.txt"} {
			if r, ok := res.Get(name); ok {
				t.Logf("%s:\n%s", name, r.Out)
			}
		}
	})
	t.Logf("timing: boot until the checks ran %s, checks %s", res.UpToChecks.Round(time.Millisecond), res.Checks.Round(time.Millisecond))
	if r := b.get(t, "register"); r.Code != 0 {
		t.Fatalf("nannyagent register (exit %d):\n%s", r.Code, r.Out)
	}
	id := strings.TrimSpace(b.get(t, "patch-id").Out)

	// The unit carries the policy's limits, and it is a cgroup of its own.
	wantLines(t, "the transient unit during the run", b.get(t, "unit-before"),
		"ActiveState=active", "RuntimeMaxUSec=17min", "MemoryMax=1610612736", "TasksMax=768", "KillMode=control-group", "Type=exec",
		"ControlGroup=/system.slice/nannyagent-patch-"+id+".service")

	t.Logf("the transient unit during the run:\n%s", b.get(t, "unit-before").Out)
	// Both services restarted; the run's processes did not.
	before := strings.Fields(b.get(t, "pids-before").Out)
	after := strings.Fields(b.get(t, "pids-after").Out)
	if len(before) != 3 || len(after) != 3 {
		t.Fatalf("main pids before %q after %q", before, after)
	}
	if before[0] == after[0] || before[1] == after[1] {
		t.Errorf("broker or worker did not restart: before %q after %q", before, after)
	}
	t.Logf("main pids (broker, worker, run): before the restart %v, after %v", before, after)
	if before[2] == "0" || before[2] != after[2] {
		t.Errorf("the run's main process changed across the restart: before %s after %s", before[2], after[2])
	}
	if r := b.get(t, "restart"); r.Code != 0 {
		t.Errorf("systemctl restart (exit %d): %s", r.Code, r.Out)
	}
	wantLines(t, "the transient unit after the restart", b.get(t, "unit-after-restart"), "ActiveState=active")
	if s := b.get(t, "state-during").Out; !strings.Contains(s, "uploads=0\n") {
		t.Errorf("a result was uploaded while the run went on:\n%s", s)
	}

	// One upload, the run's own output, exit 0.
	st := b.get(t, "state-after").Out
	for _, w := range []string{"uploads=1\n", "status=completed\n", "upload0_exit_code=0\n", "Setting up openssl"} {
		if !strings.Contains(st, w) {
			t.Errorf("patchbed state lacks %q:\n%s", w, st)
		}
	}
	// The apply ran once (the only install); by the time the log is read
	// the container's dry run may have asked for updates too.
	if calls := b.get(t, "apt-calls").Out; strings.Count(calls, "--only-upgrade") != 1 || strings.Count(calls, " update -q") > 2 {
		t.Errorf("the apply did not run exactly once:\n%s", calls)
	}
	if j := b.get(t, "broker-journal").Out; !strings.Contains(j, "patch run found again in its unit") {
		t.Errorf("the restarted broker did not find the run again:\n%s", j)
	}
	wantLines(t, "the unit after the run", b.get(t, "unit-gone"), "ActiveState=inactive")
	if rec := b.get(t, "broker-record").Out; !strings.Contains(rec, `"state": "finished"`) || !strings.Contains(rec, `"unit": "nannyagent-patch-`+id+`.service"`) {
		t.Errorf("broker record:\n%s", rec)
	}
	t.Run("container", func(t *testing.T) { containerRun(t, b) })
}

// containerRun checks the dry run in container 105: pct ran inside the
// run's transient unit, with the exact command lines and stdin /dev/null,
// and the upload carried the record's lxc_id.
func containerRun(t *testing.T, b booted) {
	id := strings.TrimSpace(b.get(t, "lxc-patch-id").Out)
	st := b.get(t, "lxc-state").Out
	for _, w := range []string{"uploads=1\n", "status=completed\n", "upload0_exit_code=0\n", "upload0_lxc_id=7sfzjqlwhc0ptu5\n", "would upgrade: openssl"} {
		if !strings.Contains(st, w) {
			t.Errorf("container run: patchbed state lacks %q:\n%s", w, st)
		}
	}
	unit := "0::/system.slice/nannyagent-patch-" + id + ".service"
	dest := "/run/nannyagent-patch-" + id
	want := strings.Join([]string{
		"/dev/null\t" + unit + "\tpush\t105\t/dev/fd/3\t" + dest,
		"/dev/null\t" + unit + "\texec\t105\t--\t/bin/bash\t" + dest + "\t--dry-run",
		"/dev/null\t" + unit + "\texec\t105\t--\t/bin/rm\t-f\t--\t" + dest, ""}, "\n")
	if got := b.get(t, "pct-log").Out; got != want {
		t.Errorf("pct calls:\n%s\nwant:\n%s", got, want)
	}
	if rec := b.get(t, "lxc-record").Out; !strings.Contains(rec, `"vmid": "105"`) || !strings.Contains(rec, `"state": "finished"`) {
		t.Errorf("container run's broker record:\n%s", rec)
	}
}

// buildPatchbed builds test/cmd/patchbed, static, into dir.
func buildPatchbed(ctx context.Context, dir string) error {
	root, err := repo.Root()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "patchbed"), "./test/cmd/patchbed")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build patchbed: %w\n%s", err, out)
	}
	return nil
}

func sha256Hex(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}
