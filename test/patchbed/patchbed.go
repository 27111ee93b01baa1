// Package patchbed sets up and judges a patch run held across the agent's
// own restart in a booted test machine (test/nspawn): the fake NannyAPI
// (test/cmd/patchbed) and the fake apt-get that holds a host apply, the
// worker's config and the policy that allow the run, the checks script's
// steps (Steps), and the checks of what became of the run (Outlived).
// test/units restarts the agent with systemctl, test/packages with a
// package upgrade.
package patchbed

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

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/nspawn"
	"github.com/nannyai/nannyagent/test/repo"
)

// Steps defines the shell functions patch_hold, patch_restarted and
// patch_release for a checks script; put it before the script's own steps.
//
//go:embed steps.sh
var Steps string

// Config points the worker at patchbed inside the machine and polls runs
// every second.
const Config = `nannyapi_url: "http://127.0.0.1:8089"
portal_url: "http://127.0.0.1:8089"
token_path: /var/lib/nannyagent/token.json
patch_poll_interval: 1s
`

// Policy pins the fake's stand-in apt-update.sh, allows apply, puts the
// fake apt-get first on the run's PATH, allows container 105 through a
// fake pct at /opt/fakepct/pct, and sets the limits the transient unit
// must show.
func Policy() string {
	d := sha256.Sum256(fakeapi.StandInAptUpdate())
	return `version: 1
patches:
  enabled: true
  modes: [dry-run, apply]
  path: /opt/fakeapt:/usr/sbin:/usr/bin:/sbin:/bin
  pct: /opt/fakepct/pct
  vmids: ["105"]
  pinned:
    - {id: stand-in, sha256: ` + hex.EncodeToString(d[:]) + `, name: apt-update.sh}
limits:
  patch_max_runtime: 17m
  patch_child_memory: 1536MiB
  patch_child_tasks: 768
`
}

// Install builds patchbed into dir and puts it into the machine with the
// fake apt-get (in /opt/fakeapt) and its list of upgradable packages.
func Install(ctx context.Context, m *nspawn.Machine, dir string) error {
	root, err := repo.Root()
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "patchbed")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./test/cmd/patchbed")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build patchbed: %w\n%s", err, out)
	}
	if err := m.Install(bin, "/usr/local/bin/patchbed", 0o755); err != nil {
		return err
	}
	if err := m.WriteFile("/opt/fakeapt/apt-get", fakeapi.FakeAptGet(), 0o755); err != nil {
		return err
	}
	return m.WriteFile("/opt/fakeapt/upgradable", []byte("openssl 3.0.11-1~deb12u1 3.0.11-1~deb12u2\nlibc6 2.36-9 2.36-9+deb12u3\n"), 0o644)
}

// Outlived checks what Steps recorded: the restart gave the broker and
// the worker new main processes while the run's stayed; no result went up
// while the run was held; after the release the new broker found the run
// again, the new worker uploaded its result once (completed, exit 0, the
// run's own output), the install ran once, and the unit is gone. get
// returns a recorded result by name.
func Outlived(t *testing.T, get func(*testing.T, string) nspawn.Result) {
	t.Helper()
	id := strings.TrimSpace(get(t, "patch-id").Out)
	before := strings.Fields(get(t, "pids-before").Out)
	after := strings.Fields(get(t, "pids-after").Out)
	if len(before) != 3 || len(after) != 3 {
		t.Fatalf("main pids (broker, worker, run) before %q after %q", before, after)
	}
	t.Logf("main pids (broker, worker, run): before the restart %v, after %v", before, after)
	for i, name := range []string{"broker", "worker"} {
		if before[i] == "0" || after[i] == "0" || before[i] == after[i] {
			t.Errorf("the %s did not restart while the run was held: main pid before %s after %s", name, before[i], after[i])
		}
	}
	if before[2] == "0" || before[2] != after[2] {
		t.Errorf("the run's main process changed across the restart: before %s after %s", before[2], after[2])
	}
	if r := get(t, "unit-after-restart"); !strings.Contains(r.Out, "ActiveState=active\n") {
		t.Errorf("the run's unit after the restart:\n%s", r.Out)
	}
	if s := get(t, "state-during").Out; !strings.Contains(s, "uploads=0\n") {
		t.Errorf("a result was uploaded while the run went on:\n%s", s)
	}
	st := get(t, "state-after").Out
	for _, w := range []string{"uploads=1\n", "status=completed\n", "upload0_exit_code=0\n", "Setting up openssl"} {
		if !strings.Contains(st, w) {
			t.Errorf("patchbed state lacks %q:\n%s", w, st)
		}
	}
	// The apply ran once (the only install); by the time the log is read
	// a container's dry run after it may have asked for updates too.
	if calls := get(t, "apt-calls").Out; strings.Count(calls, "--only-upgrade") != 1 || strings.Count(calls, " update -q") > 2 {
		t.Errorf("the apply did not run exactly once:\n%s", calls)
	}
	if j := get(t, "broker-journal").Out; !strings.Contains(j, "patch run found again in its unit") {
		t.Errorf("the restarted broker did not find the run again:\n%s", j)
	}
	if r := get(t, "unit-gone"); !strings.Contains(r.Out, "ActiveState=inactive") {
		t.Errorf("the run's unit after the run:\n%s", r.Out)
	}
	if rec := get(t, "broker-record").Out; !strings.Contains(rec, `"state": "finished"`) || !strings.Contains(rec, `"unit": "nannyagent-patch-`+id+`.service"`) {
		t.Errorf("broker record:\n%s", rec)
	}
}
