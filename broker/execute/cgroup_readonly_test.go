package execute

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A container sees the host's cgroup v1 hierarchies read-only, with the
// directories the host made in them: such a parent must count as
// unavailable, or every run fails to make its cgroup.
func TestExistingReadOnlyCgroupIsUnavailable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a read-only bind mount")
	}
	dir := t.TempDir()
	parent := filepath.Join(dir, "nannyagent-exec")
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	c := &cgroups{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := c.mkdir(parent); err != nil {
		t.Fatalf("an existing writable parent: %v", err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.mkdir(parent); err == nil {
		t.Error("an existing parent on a read-only mount was taken as usable")
	}
}
