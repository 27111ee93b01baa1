package nspawn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Machine is one system to boot: a writable overlay of a base (a copy where
// overlayfs is not available), so the cached base stays clean. It is
// unmounted and removed when the test ends.
type Machine struct {
	// Root is the machine's root directory on the host.
	Root string
	// Name is the machine's name, and its hostname inside.
	Name string
	// Overlay is false when Root is a copy of the base.
	Overlay bool
	dir     string
}

// NewMachine makes a machine from base (see [Base]).
func NewMachine(tb testing.TB, base string) *Machine {
	tb.Helper()
	m, err := newMachine(base)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := m.remove(); err != nil {
			tb.Error(err)
		}
	})
	return m
}

func newMachine(base string) (*Machine, error) {
	// Not t.TempDir: overlayfs options cannot carry ',' or ':' in paths,
	// and test names may.
	dir, err := os.MkdirTemp("", "nannyagent-machine-")
	if err != nil {
		return nil, err
	}
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	m := &Machine{Root: filepath.Join(dir, "root"), Name: "nannyagent-test-" + hex.EncodeToString(id), dir: dir}
	for _, d := range []string{"root", "upper", "work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", base, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := unix.Mount("overlay", m.Root, "overlay", 0, opts); err == nil {
		m.Overlay = true
		return m, nil
	}
	if err := os.Remove(m.Root); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := copyTree(base, m.Root); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return m, nil
}

func (m *Machine) remove() error {
	if m.Overlay {
		if err := unix.Unmount(m.Root, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			// Something still holds it; detach it so the directory goes.
			if err := unix.Unmount(m.Root, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", m.Root, err)
			}
		}
	}
	return os.RemoveAll(m.dir)
}

// Path is where a path inside the machine is on the host. Symbolic links
// in the machine are not followed; use it for reading results.
func (m *Machine) Path(p string) string {
	return filepath.Join(m.Root, filepath.Clean("/"+p))
}

// WriteFile writes a file inside the machine, creating its directories
// (0755), owned by root. Links inside the machine are followed only where
// they stay inside it.
func (m *Machine) WriteFile(p string, data []byte, mode fs.FileMode) error {
	root, err := os.OpenRoot(m.Root)
	if err != nil {
		return err
	}
	defer root.Close()
	rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
	if err := root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		return fmt.Errorf("machine %s: %w", p, err)
	}
	if err := root.WriteFile(rel, data, mode); err != nil {
		return fmt.Errorf("machine %s: %w", p, err)
	}
	// WriteFile's mode passes through the umask and leaves an existing
	// file's mode alone.
	if err := root.Chmod(rel, mode); err != nil {
		return fmt.Errorf("machine %s: %w", p, err)
	}
	return root.Chown(rel, 0, 0)
}

// Install copies a host file into the machine.
func (m *Machine) Install(src, dst string, mode fs.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return m.WriteFile(dst, data, mode)
}

// Symlink makes a symbolic link inside the machine (target as the machine
// sees it), replacing what was there.
func (m *Machine) Symlink(target, p string) error {
	root, err := os.OpenRoot(m.Root)
	if err != nil {
		return err
	}
	defer root.Close()
	rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
	if err := root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		return err
	}
	_ = root.Remove(rel)
	return root.Symlink(target, rel)
}

// Run runs a command inside the machine without booting it (systemd-nspawn
// as a chroot with its own namespaces and no network): what a package's
// maintainer scripts would do, before the first boot.
func (m *Machine) Run(ctx context.Context, out io.Writer, argv ...string) error {
	args := append([]string{"-D", m.Root, "--machine=" + m.Name, "--register=no", "--keep-unit",
		"--quiet", "--private-network", "--console=pipe", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "systemd-nspawn", args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("in %s: %s: %w", m.Name, strings.Join(argv, " "), err)
	}
	return nil
}
