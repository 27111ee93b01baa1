package execute

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// stableDir makes a directory only root can change, outside /tmp (whose
// sticky world-writable mode makes everything under it unstable).
func stableDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/run", "execute-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// A device operand must be a block device (or a character device where
// allowed) in directories only root can change, and reaches the tool by
// its own path.
func TestDeviceOperands(t *testing.T) {
	r := newTestRunner(t, Config{})
	dir := stableDir(t)
	blk, chr, reg := filepath.Join(dir, "blk"), filepath.Join(dir, "chr"), filepath.Join(dir, "reg")
	if err := unix.Mknod(blk, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))); err != nil {
		t.Skipf("mknod: %v", err)
	}
	if err := unix.Mknod(chr, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	writeFile0(t, reg, "not a device\n", 0o644)
	link := filepath.Join(dir, "by-label")
	if err := os.Symlink("blk", link); err != nil {
		t.Fatal(err)
	}
	unstable := filepath.Join(dir, "open")
	if err := os.Mkdir(unstable, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(unstable, 0o777); err != nil {
		t.Fatal(err)
	}
	blk2 := filepath.Join(unstable, "blk")
	if err := unix.Mknod(blk2, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))); err != nil {
		t.Fatal(err)
	}
	echo := func(p string, chars bool) (*Result, error) {
		st := stage("/usr/bin/echo", p)
		st.Paths = []PathOperand{{Index: 1, Path: p, Roots: []string{dir}, Open: OpenDevice, CharDevices: chars}}
		return r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: &testJudge{}})
	}
	for _, c := range []struct {
		path  string
		chars bool
		want  string
	}{{blk, false, blk}, {link, false, blk}, {chr, true, chr}} {
		res, err := echo(c.path, c.chars)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
		} else if got := strings.TrimSpace(string(res.Stdout)); got != c.want {
			t.Errorf("%s reached the tool as %q, want %s", c.path, got, c.want)
		}
	}
	for _, c := range []struct {
		path  string
		chars bool
		why   string
	}{{chr, false, "not a block device"}, {reg, false, "not a block device"}, {reg, true, "not a block or character device"}, {blk2, false, "non-root account can change"}} {
		if _, err := echo(c.path, c.chars); !errors.Is(err, ErrPathRefused) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v, want a refusal saying %q", c.path, err, c.why)
		}
	}
}

// A missing operand goes to the tool: as written where only root could
// create it in time, as a name that cannot exist elsewhere.
func TestMissingOperandGoesToTheTool(t *testing.T) {
	r := newTestRunner(t, Config{})
	stable := stableDir(t)
	open := t.TempDir() // under /tmp: sticky and world-writable
	for _, c := range []struct {
		path, want string
		mode       OpenMode
	}{
		{filepath.Join(stable, "missing.log"), filepath.Join(stable, "missing.log"), OpenFD},
		{filepath.Join(stable, "missing.log"), filepath.Join(stable, "missing.log"), OpenCheckOnly},
		{filepath.Join(open, "missing.log"), "/dev/fd/1023", OpenFD},
		{filepath.Join(open, "missing.log"), "/dev/fd/1023", OpenCheckOnly},
	} {
		st := withPath(stage("/usr/bin/cat", c.path), 1, c.mode)
		res, err := r.Run(context.Background(), Request{Stages: []Stage{st, stage("/usr/bin/wc", "-l")}, Judge: &testJudge{}})
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		if want := "/usr/bin/cat: " + c.want + ": No such file or directory"; !strings.Contains(string(res.Stderr), want) ||
			strings.TrimSpace(string(res.Stdout)) != "0" || res.ExitCode != 0 || len(res.MissingOperands) != 1 {
			t.Errorf("%s (%v): stderr %q stdout %q exit %d missing %v; want %q", c.path, c.mode, res.Stderr, res.Stdout, res.ExitCode, res.MissingOperands, want)
		}
	}
}

func TestMissingProgramIsNotInstalled(t *testing.T) {
	r := newTestRunner(t, Config{})
	_, err := r.Run(context.Background(), Request{Stages: []Stage{stage("/usr/bin/true"), stage("/usr/bin/nannyagent-not-here")}})
	var ni *NotInstalledError
	if !errors.As(err, &ni) || ni.Program != "/usr/bin/nannyagent-not-here" || err.Error() != "/usr/bin/nannyagent-not-here: not installed on this host" {
		t.Errorf("got %v", err)
	}
}

// Every run is confined where the kernel has Landlock: it cannot create a
// file except beneath its writes; with LandlockOff it can.
func TestLandlockPerRun(t *testing.T) {
	abi, why := LandlockABI()
	if abi == 0 {
		t.Skip(why)
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { landlockPerRun(t, m.cfg, abi, rootDir(t)) })
	}
}

func landlockPerRun(t *testing.T, cfg Config, abi int, dir string) {
	allowed := filepath.Join(dir, "allowed")
	if err := os.Mkdir(allowed, 0o755); err != nil {
		t.Fatal(err)
	}
	on := newTestRunner(t, cfg)
	if info := on.Info().Confinement; !info.Landlock || info.ABI != abi || len(info.Denies) == 0 {
		t.Fatalf("confinement %+v", info)
	}
	touch := func(r *Runner, p string, writes ...string) int {
		st := stage("/usr/bin/touch", p)
		st.Writes = writes
		res, err := r.Run(context.Background(), Request{Stages: []Stage{st}})
		if err != nil {
			t.Fatal(err)
		}
		return res.ExitCode
	}
	if code := touch(on, filepath.Join(dir, "denied")); code == 0 || fileExists(filepath.Join(dir, "denied")) {
		t.Errorf("a confined run created a file (exit %d)", code)
	}
	if code := touch(on, filepath.Join(allowed, "ok"), allowed); code != 0 || !fileExists(filepath.Join(allowed, "ok")) {
		t.Errorf("a run could not write beneath its writes (exit %d)", code)
	}
	// The broker's own thread stays free: this test process still writes.
	writeFile0(t, filepath.Join(dir, "from-the-runner"), "x", 0o644)
	cfg.Landlock = LandlockOff
	off := newTestRunner(t, cfg)
	if info := off.Info().Confinement; info.Landlock || info.Reason != "turned off" {
		t.Errorf("off: %+v", info)
	}
	if code := touch(off, filepath.Join(dir, "unconfined")); code != 0 {
		t.Errorf("LandlockOff: touch exit %d", code)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Landlock hides other processes' links in /proc from a confined run; a
// stage that inspects processes runs without a domain and sees them.
func TestProcessInspectorsRunUnconfined(t *testing.T) {
	if abi, why := LandlockABI(); abi == 0 {
		t.Skip(why)
	}
	r := newTestRunner(t, Config{})
	cwd := fmt.Sprintf("/proc/%d/cwd", os.Getpid())
	readlink := func(inspects bool) *Result {
		st := stage("/usr/bin/readlink", cwd)
		st.InspectsProcesses = inspects
		res, err := r.Run(context.Background(), Request{Stages: []Stage{st}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := readlink(false); res.ExitCode == 0 {
		t.Errorf("a confined run read %s: %q", cwd, res.Stdout)
	}
	here, _ := os.Getwd()
	if res := readlink(true); res.ExitCode != 0 || strings.TrimSpace(string(res.Stdout)) != here {
		t.Errorf("an inspecting run: exit %d %q %q, want %q", res.ExitCode, res.Stdout, res.Stderr, here)
	}
}
