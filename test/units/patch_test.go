package units

import (
	"context"
	_ "embed"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/nspawn"
	"github.com/nannyai/nannyagent/test/patchbed"
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
	base, _, err := nspawn.Base(ctx, nspawn.RootfsOptions{Include: nspawn.AgentInclude, Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	m := nspawn.NewMachine(t, base)
	if err := m.InstallAgent(ctx, nspawn.Agent{BinDir: bin, Config: patchbed.Config,
		LocalPolicy: map[string]string{"50-patches.yaml": patchbed.Policy()}}); err != nil {
		t.Fatal(err)
	}
	if err := patchbed.Install(ctx, m, bin); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/opt/fakepct/pct", []byte(fakePct), 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := m.Boot(ctx, nspawn.BootOptions{Checks: patchbed.Steps + patchChecks, Timeout: 5 * time.Minute})
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
	if r := b.get(t, "restart"); r.Code != 0 {
		t.Errorf("systemctl restart (exit %d): %s", r.Code, r.Out)
	}
	patchbed.Outlived(t, b.get)
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
