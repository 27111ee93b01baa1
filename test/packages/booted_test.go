// Package packages proves the .deb where it is installed: in a booted
// Debian (test/nspawn), never on the test machine. One machine installs,
// upgrades with local changes, removes, installs again and purges; another
// holds the reference agent as its install.sh leaves it and migrates.
// A third upgrades while a patch run is held: the run goes on in its
// transient unit and its result goes up once. Enable with
// NANNYAGENT_NSPAWN=1 (make nspawn-test).
package packages

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/test/nspawn"
	"github.com/nannyai/nannyagent/test/patchbed"
	"github.com/nannyai/nannyagent/test/repo"
)

var (
	//go:embed lifecycle.sh
	lifecycleChecks string
	//go:embed migrate.sh
	migrateChecks string
	//go:embed upgrade_patch.sh
	upgradePatchChecks string
)

// The upgrade goes to a rebuilt package with a higher version.
const (
	v1 = "0.1.0"
	v2 = "0.1.0+rebuilt1"
)

// buildDeb runs make package for this machine's architecture, .deb only.
func buildDeb(t *testing.T, version string) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	cmd := exec.Command("make", "package", "PKG_ARCHES="+runtime.GOARCH, "PKG_FORMATS=deb",
		"PKG_VERSION="+version, "DIST="+dist)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	want := filepath.Join(dist, fmt.Sprintf("nannyagent_%s_%s.deb", version, runtime.GOARCH))
	if _, err := os.Stat(want); err != nil {
		t.Fatalf("make package made no %s: %v", want, err)
	}
	return want
}

func machine(t *testing.T, debs ...string) *nspawn.Machine {
	t.Helper()
	base, _, err := nspawn.Base(context.Background(), nspawn.RootfsOptions{Include: nspawn.AgentInclude, Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	m := nspawn.NewMachine(t, base)
	for _, d := range debs {
		if err := m.Install(d, "/root/pkgs/"+filepath.Base(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func boot(t *testing.T, m *nspawn.Machine, checks string) booted {
	t.Helper()
	start := time.Now()
	res, err := m.Boot(context.Background(), nspawn.BootOptions{Checks: checks, Tracing: true, Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: boot until the checks ran %s, checks %s, whole boot %s",
		res.UpToChecks.Round(time.Millisecond), res.Checks.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	b := booted{t: t, res: res}
	t.Cleanup(b.dumpOnFailure)
	return b
}

func TestPackageLifecycle(t *testing.T) {
	nspawn.Require(t)
	deb1, deb2 := buildDeb(t, v1), buildDeb(t, v2)
	m := machine(t, deb1, deb2)
	script := strings.NewReplacer("@V1@", filepath.Base(deb1), "@V2@", filepath.Base(deb2)).Replace(lifecycleChecks)
	b := boot(t, m, script)

	t.Run("install", func(t *testing.T) {
		b.ok(t, "install-v1")
		wantLines(t, "files, owners, modes", b.get(t, "files-v1"), packageFiles...)
		for _, l := range lines(b.get(t, "files-v1").Out) {
			// Every shipped path is root's and writable by root alone.
			f := strings.Fields(l)
			if f[0] != "root" || f[1] != "root" || (f[2] != "755" && f[2] != "644") {
				t.Errorf("shipped with an unexpected owner or mode: %s", l)
			}
		}
		wantLines(t, "runtime layout", b.get(t, "layout-v1"),
			"root root 755 directory /etc/nannyagent",
			"root root 600 regular file /etc/nannyagent/config.yaml",
			"root root 755 directory /etc/nannyagent/policy.d",
			"nannyagent nannyagent 700 directory /var/lib/nannyagent",
			"root root 700 directory /var/lib/nannyagent-broker",
			"root root 755 directory /run/nannyagent",
			"root nannyagent-admin 660 socket /run/nannyagent/worker.sock",
			"root nannyagent 750 directory /run/nannyagent-broker",
			"root nannyagent 660 socket /run/nannyagent-broker/broker.sock")
		b.ok(t, "config-from-example")
		if r := b.get(t, "conffiles"); strings.TrimSpace(r.Out) != "" {
			t.Errorf("the package has conffiles (config.yaml must not be one): %s", r.Out)
		}
		acc := b.get(t, "accounts").Out
		for _, want := range []string{"nannyagent:x:", "/var/lib/nannyagent:/usr/sbin/nologin", "nannyagent-admin:x:"} {
			if !strings.Contains(acc, want) {
				t.Errorf("accounts: no %q in\n%s", want, acc)
			}
		}
		wantExact(t, "enabled", b.get(t, "enabled-v1"), "enabled\nenabled\nenabled")
		wantExact(t, "active", b.get(t, "active-v1"), "active\nactive\nactive")
		wantExact(t, "CLI on root's PATH", b.get(t, "path-v1"), "/usr/bin/nannyagent")
		st := status(t, b.get(t, "status-v1"))
		if st.GetVersion() != v1 {
			t.Errorf("status: worker version %q, want %q", st.GetVersion(), v1)
		}
		if n := len(st.GetBroker().GetProbe().GetPolicy().GetFiles()); n != 1 {
			t.Errorf("the broker loaded %d policy files, want the vendor file alone", n)
		}
	})

	t.Run("upgrade keeps local changes", func(t *testing.T) {
		b.ok(t, "upgrade")
		wantExact(t, "version", b.get(t, "version-v2"), v2)
		b.ok(t, "kept-after-upgrade")
		wantToken(t, "token after upgrade", b.get(t, "token-after-upgrade"), "at-local", "rt-local", "agent-kept")
		wantLines(t, "modes after upgrade", b.get(t, "layout-v2"),
			"root root 600 regular file /etc/nannyagent/config.yaml",
			"root root 644 regular file /etc/nannyagent/policy.d/50-local.yaml",
			"nannyagent nannyagent 600 regular file /var/lib/nannyagent/token.json")
		before, after := b.get(t, "worker-pid-before").Out, b.get(t, "worker-pid-after").Out
		if strings.TrimSpace(before) == strings.TrimSpace(after) {
			t.Errorf("the worker was not restarted on upgrade (pid %s)", strings.TrimSpace(after))
		}
		wantExact(t, "active", b.get(t, "active-v2"), "active\nactive\nactive")
		st := status(t, b.get(t, "status-v2"))
		if st.GetVersion() != v2 {
			t.Errorf("status after upgrade: worker version %q, want %q", st.GetVersion(), v2)
		}
		if n := len(st.GetBroker().GetProbe().GetPolicy().GetFiles()); n != 2 {
			t.Errorf("the broker loaded %d policy files after the upgrade, want the vendor file and the local one", n)
		}
		if got := st.GetSettings().GetMetricsInterval().AsDuration(); got != 45*time.Second {
			t.Errorf("the worker's metrics interval is %s, want the local config's 45s", got)
		}
		if got := st.GetRegistration().GetAgentId(); got != "agent-kept" {
			t.Errorf("agent id after upgrade %q, want the kept token's", got)
		}
	})

	t.Run("remove keeps config and state", func(t *testing.T) {
		b.ok(t, "remove")
		wantExact(t, "units after remove", b.get(t, "removed-active"), "inactive\ninactive\ninactive\ninactive")
		wantExact(t, "enablement links after remove", b.get(t, "removed-links"), "")
		b.ok(t, "removed-kept")
		wantToken(t, "token after remove", b.get(t, "token-after-remove"), "at-local", "rt-local", "agent-kept")
		for _, l := range lines(b.get(t, "removed-binaries").Out) {
			if !strings.Contains(l, "No such file") {
				t.Errorf("after remove: %s", l)
			}
		}
		b.ok(t, "reinstall")
		wantExact(t, "active after reinstall", b.get(t, "reinstall-active"), "active\nactive\nactive")
		b.ok(t, "reinstall-kept")
	})

	t.Run("purge", func(t *testing.T) {
		b.ok(t, "purge")
		wantExact(t, "files left after purge", b.get(t, "purge-leftovers"), "")
		wantExact(t, "units left after purge", b.get(t, "purge-units"), "")
		wantExact(t, "diversions left after purge", b.get(t, "purge-diversions"), "")
		acc := b.get(t, "purge-accounts").Out
		if !strings.Contains(acc, "nannyagent:x:") || !strings.Contains(acc, "nannyagent-admin:x:") {
			t.Errorf("the accounts must stay after purge:\n%s", acc)
		}
	})
}

// packageFiles is what the .deb puts on the disk, with owner, group and
// mode: the list a reviewer reads (README, "What the package installs").
var packageFiles = []string{
	"root root 755 regular file /usr/bin/nannyagent",
	"root root 755 regular file /usr/sbin/nannyagent-broker",
	"root root 755 regular file /usr/sbin/nannyagent-worker",
	"root root 644 regular file /usr/lib/systemd/system/nannyagent-broker.service",
	"root root 644 regular file /usr/lib/systemd/system/nannyagent-broker.socket",
	"root root 644 regular file /usr/lib/systemd/system/nannyagent-worker.service",
	"root root 644 regular file /usr/lib/systemd/system/nannyagent-worker.socket",
	"root root 644 regular file /usr/lib/systemd/system/nannyagent-broker-vsock.socket",
	"root root 644 regular file /usr/share/nannyagent/guest/nannyagent-worker.service.d/vsock.conf",
	"root root 644 regular file /usr/lib/sysusers.d/nannyagent.conf",
	"root root 644 regular file /usr/lib/tmpfiles.d/nannyagent.conf",
	"root root 644 regular file /usr/share/nannyagent/policy.yaml",
	"root root 644 regular file /usr/share/nannyagent/config.yaml.example",
	"root root 755 directory /etc/nannyagent",
	"root root 755 directory /etc/nannyagent/policy.d",
	"root root 644 regular file /usr/share/man/man1/nannyagent.1.gz",
	"root root 644 regular file /usr/share/man/man8/nannyagent-broker.8.gz",
	"root root 644 regular file /usr/share/man/man8/nannyagent-worker.8.gz",
	"root root 644 regular file /usr/share/doc/nannyagent/README.md",
	"root root 644 regular file /usr/share/doc/nannyagent/copyright",
	"root root 644 regular file /usr/share/doc/nannyagent/changelog.gz",
	"root root 644 regular file /usr/share/lintian/overrides/nannyagent",
}

// The reference agent as its install.sh leaves a host
// (shared/reference/nannyagent-contract.md, "install.sh"): its binary, its
// unit enabled, a root-only config with a LAN http:// URL and the agent id,
// and root's token files in a 0700 state directory.
const (
	refAgentID = "5f1c9a0e-reference-agent"
	refConfig  = `nannyapi_url: "http://192.168.77.10:8090"
portal_url: "https://nannyai.dev"
token_path: /var/lib/nannyagent/token.json
metrics_interval: 30
proxmox_interval: 300
debug: false
agent_id: "` + refAgentID + `"
`
	refToken = `{
  "access_token": "ref-access-token",
  "refresh_token": "ref-refresh-token",
  "token_type": "",
  "expires_at": "2099-01-01T00:00:00.000000000Z",
  "agent_id": "` + refAgentID + `"
}`
	// A stand-in for the binary: the daemon waits; anything else answers
	// at once, so a check that runs it by mistake fails rather than hangs.
	refBinary = `#!/bin/sh
case "$1" in
--daemon) exec sleep infinity ;;
*) echo "nannyagent version 0.0.12 (reference)" ;;
esac
`
	refUnit = `[Unit]
Description=NannyAgent - Linux diagnostic agent
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/sbin/nannyagent --daemon
Restart=always
RestartSec=10s
User=root
Group=root
WorkingDirectory=/var/lib/nannyagent
NoNewPrivileges=false
PrivateTmp=true
ProtectSystem=true
ReadWritePaths=/var/lib/nannyagent
AmbientCapabilities=CAP_SYS_ADMIN CAP_BPF CAP_PERFMON
StandardOutput=journal
StandardError=journal
SyslogIdentifier=nannyagent

[Install]
WantedBy=multi-user.target
`
)

func installReference(t *testing.T, m *nspawn.Machine) {
	t.Helper()
	files := []struct {
		path, data string
		mode       os.FileMode
	}{
		{"/usr/sbin/nannyagent", refBinary, 0o755},
		{"/etc/systemd/system/nannyagent.service", refUnit, 0o644},
		{"/etc/nannyagent/config.yaml", refConfig, 0o600},
		{"/var/lib/nannyagent/token.json", refToken, 0o600},
		{"/var/lib/nannyagent/.refresh_token", "ref-refresh-token", 0o600},
		{"/var/lib/nannyagent/.nannyagent.lock", "Installed at Mon Jan 12 10:00:00 UTC 2026\n", 0o644},
	}
	for _, f := range files {
		if err := m.WriteFile(f.path, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	// install.sh: chmod 700 on both directories.
	for _, d := range []string{"/etc/nannyagent", "/var/lib/nannyagent"} {
		if err := os.Chmod(m.Path(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Symlink("/etc/systemd/system/nannyagent.service", "/etc/systemd/system/multi-user.target.wants/nannyagent.service"); err != nil {
		t.Fatal(err)
	}
}

func TestPackageMigratesReferenceAgent(t *testing.T) {
	nspawn.Require(t)
	deb := buildDeb(t, v1)
	m := machine(t, deb)
	installReference(t, m)
	b := boot(t, m, strings.ReplaceAll(migrateChecks, "@V1@", filepath.Base(deb)))

	wantExact(t, "reference agent before", b.get(t, "ref-before"), "active\nenabled")
	b.ok(t, "install")
	wantExact(t, "reference agent after", b.get(t, "ref-after"), "inactive\ndisabled")
	if d := b.get(t, "diversion").Out; !strings.Contains(d, "diversion of /usr/sbin/nannyagent to /usr/sbin/nannyagent.reference by nannyagent") {
		t.Errorf("no diversion of the reference binary: %s", d)
	}
	wantExact(t, "the diverted binary", b.get(t, "diverted-binary"), "root root 755 regular file /usr/sbin/nannyagent.reference")
	if p := b.get(t, "path-env").Out; !strings.Contains(p, "/usr/sbin:/usr/bin") {
		t.Errorf("the checks' PATH does not put /usr/sbin first, so the next check proves nothing: %s", p)
	}
	wantExact(t, "nannyagent on root's PATH", b.get(t, "which"), "/usr/bin/nannyagent")
	wantExact(t, "nannyagent version", b.get(t, "version"), "nannyagent version "+v1+"\nLinux diagnostic agent with eBPF capabilities")
	wantLines(t, "migrated layout", b.get(t, "layout"),
		"root root 755 directory /etc/nannyagent",
		"root root 600 regular file /etc/nannyagent/config.yaml",
		"nannyagent nannyagent 700 directory /var/lib/nannyagent",
		"nannyagent nannyagent 600 regular file /var/lib/nannyagent/token.json",
		"nannyagent nannyagent 600 regular file /var/lib/nannyagent/.refresh_token",
		"nannyagent nannyagent 644 regular file /var/lib/nannyagent/.nannyagent.lock")
	b.ok(t, "kept")
	wantExact(t, "worker", b.get(t, "worker-active"), "active")

	st := status(t, b.get(t, "status"))
	// The worker read the root-only config (through LoadCredential=): its
	// URL and agent id are the reference install's.
	if api := st.GetApi(); api.GetUrl() != "http://192.168.77.10:8090" || !api.GetInsecure() {
		t.Errorf("the LAN http:// URL is not in use and flagged insecure: %v", api)
	}
	if r := st.GetRegistration(); !r.GetRegistered() || r.GetAgentId() != refAgentID {
		t.Errorf("the migrated agent lost its registration or id: %v", r)
	}
	if id := st.GetSettings().GetAgentId(); id != refAgentID {
		t.Errorf("settings agent id %q, want %q", id, refAgentID)
	}
	b.ok(t, "kept-after-status")
	wantToken(t, "migrated token", b.get(t, "token-after-status"), "ref-access-token", "ref-refresh-token", refAgentID)

	b.ok(t, "remove")
	wantExact(t, "reference binary after remove", b.get(t, "restored"), "root root 755 regular file /usr/sbin/nannyagent")
}

// TestPackageUpgradeDuringPatchRun: the upgrade's postinst restarts the
// broker and the worker while a host apply is held in the fake apt-get;
// the run's transient unit is no part of the package's units, so it goes
// on, the new broker finds it again, and the new worker uploads its result
// once.
func TestPackageUpgradeDuringPatchRun(t *testing.T) {
	nspawn.Require(t)
	deb1, deb2 := buildDeb(t, v1), buildDeb(t, v2)
	m := machine(t, deb1, deb2)
	// Present before the install: postinst keeps an existing config.
	if err := m.WriteFile("/etc/nannyagent/config.yaml", []byte(patchbed.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/etc/nannyagent/policy.d/50-patches.yaml", []byte(patchbed.Policy()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := patchbed.Install(context.Background(), m, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("@V1@", filepath.Base(deb1), "@V2@", filepath.Base(deb2)).Replace(upgradePatchChecks)
	b := boot(t, m, patchbed.Steps+script)
	if r, ok := b.res.Get("failed"); ok {
		t.Fatalf("the checks stopped: %s", r.Out)
	}
	b.ok(t, "upgrade")
	wantExact(t, "version after the upgrade", b.get(t, "version"), v2)
	patchbed.Outlived(t, b.get)
}

type booted struct {
	t   *testing.T
	res *nspawn.Results
}

func (b booted) get(t *testing.T, name string) nspawn.Result {
	t.Helper()
	r, ok := b.res.Get(name)
	if !ok {
		t.Fatalf("the checks recorded no %q (see checks.log)", name)
	}
	return r
}

// ok requires a recorded command to have exited 0.
func (b booted) ok(t *testing.T, name string) {
	t.Helper()
	if r := b.get(t, name); r.Code != 0 {
		t.Errorf("%s: exit %d\n%s", name, r.Code, r.Out)
	}
}

func (b booted) dumpOnFailure() {
	if !b.t.Failed() {
		return
	}
	names := []string{"failed", "checks.log", "journal"}
	if _, ok := b.res.Get("journal"); !ok {
		// The checks stopped before they recorded the agent's journal.
		names = append(names, "journal.txt")
	}
	for _, name := range names {
		if r, ok := b.res.Get(name); ok {
			b.t.Logf("%s:\n%s", name, r.Out)
		}
	}
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// wantLines checks that every line of want is in the result.
func wantLines(t *testing.T, what string, r nspawn.Result, want ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range lines(r.Out) {
		have[l] = true
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("%s: no line %q in\n%s", what, w, r.Out)
		}
	}
}

func wantExact(t *testing.T, what string, r nspawn.Result, want string) {
	t.Helper()
	if got := strings.TrimSpace(r.Out); got != want {
		t.Errorf("%s: got\n%s\nwant\n%s", what, got, want)
	}
}

// wantToken checks the tokens and agent id of a token file: the worker may
// rewrite the file (adding fields), never replace what it holds.
func wantToken(t *testing.T, what string, r nspawn.Result, access, refresh, agentID string) {
	t.Helper()
	var tok struct {
		Access  string `json:"access_token"`
		Refresh string `json:"refresh_token"`
		AgentID string `json:"agent_id"`
	}
	if err := json.Unmarshal([]byte(r.Out), &tok); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, r.Out)
	}
	if tok.Access != access || tok.Refresh != refresh || tok.AgentID != agentID {
		t.Errorf("%s: tokens or agent id changed:\n%s", what, r.Out)
	}
}

// status decodes nannyagent status --json and requires the broker's probe
// in it: the worker reached the socket-activated broker.
func status(t *testing.T, r nspawn.Result) *workerv1.StatusResponse {
	t.Helper()
	var st workerv1.StatusResponse
	if err := protojson.Unmarshal([]byte(r.Out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, r.Out)
	}
	if !st.GetBroker().GetReachable() || st.GetBroker().GetProbe().GetPolicy().GetSha256() == "" {
		t.Errorf("status shows no broker probe: %v", st.GetBroker())
	}
	return &st
}
