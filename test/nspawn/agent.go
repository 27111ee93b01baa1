package nspawn

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nannyai/nannyagent/test/repo"
)

// Agent is what InstallAgent puts into a machine besides the checkout's
// units, sysusers.d, tmpfiles.d and vendor policy.
type Agent struct {
	// BinDir holds static builds of nannyagent, nannyagent-broker and
	// nannyagent-worker (test/stack.Build makes them).
	BinDir string
	// Config is /etc/nannyagent/config.yaml (root:root 0600).
	Config string
	// LocalPolicy maps file names in /etc/nannyagent/policy.d to YAML.
	LocalPolicy map[string]string
	// DropIns maps a unit name to the text of a drop-in for it
	// (/etc/systemd/system/UNIT.d/testbed.conf).
	DropIns map[string]string
}

// Where an install puts each file of the checkout.
var agentFiles = []struct {
	src, dst string
	mode     os.FileMode
}{
	{"systemd/nannyagent-broker.socket", "/usr/lib/systemd/system/nannyagent-broker.socket", 0o644},
	{"systemd/nannyagent-broker.service", "/usr/lib/systemd/system/nannyagent-broker.service", 0o644},
	{"systemd/nannyagent-worker.socket", "/usr/lib/systemd/system/nannyagent-worker.socket", 0o644},
	{"systemd/nannyagent-worker.service", "/usr/lib/systemd/system/nannyagent-worker.service", 0o644},
	// Shipped for a worker in a VM guest; not enabled by the install.
	{"systemd/nannyagent-broker-vsock.socket", "/usr/lib/systemd/system/nannyagent-broker-vsock.socket", 0o644},
	{"packaging/sysusers.conf", "/usr/lib/sysusers.d/nannyagent.conf", 0o644},
	{"packaging/tmpfiles.conf", "/usr/lib/tmpfiles.d/nannyagent.conf", 0o644},
	{"packaging/policy.yaml", "/usr/share/nannyagent/policy.yaml", 0o644},
}

// Units lists the agent's unit files as installed.
func Units() []string {
	var out []string
	for _, f := range agentFiles {
		if filepath.Dir(f.dst) == "/usr/lib/systemd/system" {
			out = append(out, f.dst)
		}
	}
	return out
}

// InstallAgent installs the agent the way a package would: the binaries in
// /usr/sbin and /usr/bin, the checkout's units, sysusers.d, tmpfiles.d and
// vendor policy, then what a package's maintainer scripts run, inside the
// machine: systemd-sysusers, and enabling both sockets and the worker.
// tmpfiles.d is left to the boot (the runtime directories live in /run).
func (m *Machine) InstallAgent(ctx context.Context, a Agent) error {
	root, err := repo.Root()
	if err != nil {
		return err
	}
	for _, f := range agentFiles {
		if err := m.Install(filepath.Join(root, f.src), f.dst, f.mode); err != nil {
			return err
		}
	}
	for name, dst := range map[string]string{
		"nannyagent-broker": "/usr/sbin/nannyagent-broker",
		"nannyagent-worker": "/usr/sbin/nannyagent-worker",
		"nannyagent":        "/usr/bin/nannyagent",
	} {
		if err := m.Install(filepath.Join(a.BinDir, name), dst, 0o755); err != nil {
			return err
		}
	}
	if err := m.WriteFile("/etc/nannyagent/config.yaml", []byte(a.Config), 0o600); err != nil {
		return err
	}
	for name, text := range a.LocalPolicy {
		if err := m.WriteFile("/etc/nannyagent/policy.d/"+name, []byte(text), 0o644); err != nil {
			return err
		}
	}
	for unit, text := range a.DropIns {
		if err := m.WriteFile("/etc/systemd/system/"+unit+".d/testbed.conf", []byte(text), 0o644); err != nil {
			return err
		}
	}
	var out bytes.Buffer
	if err := m.Run(ctx, &out, "systemd-sysusers"); err != nil {
		return fmt.Errorf("%w\n%s", err, out.String())
	}
	units := []string{"nannyagent-broker.socket", "nannyagent-worker.socket", "nannyagent-worker.service"}
	if err := m.Run(ctx, &out, append([]string{"systemctl", "enable"}, units...)...); err != nil {
		return fmt.Errorf("%w\n%s", err, out.String())
	}
	return nil
}
