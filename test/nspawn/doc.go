// Package nspawn is the test bed for tests that need a booted systemd: a
// Debian root filesystem built once with debootstrap and cached outside the
// checkout, an overlay of it per test (the cache stays clean), the agent
// installed into it as a package would, a boot with systemd-nspawn in which
// a oneshot unit runs a checks script, and the results that script wrote,
// read after the machine powered off.
//
//	base, _, err := nspawn.Base(ctx, nspawn.RootfsOptions{Include: nspawn.AgentInclude})
//	m := nspawn.NewMachine(t, base)
//	err = m.InstallAgent(ctx, nspawn.Agent{BinDir: bin, Config: cfg})
//	res, err := m.Boot(ctx, nspawn.BootOptions{Checks: script, Tracing: true})
//	r, ok := res.Get("status-root") // r.Out, r.Code
//
// Everything that changes a system (accounts, units, packages) happens in
// the machine, never on the host. See README.md for what the container is
// given and why.
package nspawn

import (
	"os"
	"os/exec"
	"testing"
)

// AgentInclude are the packages the agent's booted tests need besides
// BaseInclude: bpftrace for traces, iproute2 and procps for the
// diagnostics they compare. Tests that share it share one cached base.
var AgentInclude = []string{"bpftrace", "iproute2", "procps"}

// Enabled is the environment variable that turns booted tests on; they
// take minutes and need root, so go test ./... skips them unless it is 1.
const Enabled = "NANNYAGENT_NSPAWN"

// Require skips the test unless booted tests are enabled; once enabled,
// a machine that cannot run them (not root, no systemd-nspawn or
// debootstrap) fails the test rather than passing it unseen.
func Require(tb testing.TB) {
	tb.Helper()
	if os.Getenv(Enabled) != "1" {
		tb.Skipf("booted-systemd test: set %s=1 or run make nspawn-test", Enabled)
	}
	if os.Geteuid() != 0 {
		tb.Fatal("booted-systemd test: needs root (mounts, systemd-nspawn)")
	}
	for _, tool := range []string{"systemd-nspawn", "debootstrap", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("booted-systemd test: %s not installed (apt-get install systemd-container debootstrap)", tool)
		}
	}
}
