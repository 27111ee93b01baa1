package execute

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// ownTestCgroups makes a cgroup per hierarchy, as systemd makes a unit's,
// marked delegated when delegate is set, and removes them at the end.
func ownTestCgroups(t *testing.T, delegate bool) (v2 string, v1 []string) {
	t.Helper()
	requireRoot(t)
	l, err := detectLayout()
	if err != nil || l.v2Self == "" {
		t.Skipf("no cgroup2 here: %v", err)
	}
	name := fmt.Sprintf("owntest-%d-%v", os.Getpid(), delegate)
	v2 = filepath.Join(l.v2Self, name)
	dirs := []string{v2}
	for _, ctl := range v1Controllers {
		if self := l.v1Self[ctl]; self != "" {
			v1 = append(v1, filepath.Join(self, name))
		}
	}
	dirs = append(dirs, v1...)
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			for _, sub := range []string{ownLeafName, defaultCgroupName} {
				_ = removeCgroup(filepath.Join(d, sub), 0)
			}
			if err := removeCgroup(d, 0); err != nil {
				t.Error(err)
			}
		}
	})
	if delegate {
		if err := unix.Setxattr(v2, "trusted.delegate", []byte("1"), 0); err != nil {
			t.Skipf("cannot mark a cgroup delegated here: %v", err)
		}
	}
	return v2, v1
}

// runOwnLeaf starts the test program in the cgroups and returns its output.
func runOwnLeaf(t *testing.T, v2 string, v1 []string) string {
	t.Helper()
	dir, err := os.Open(v2)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, append([]string{childFlag, "ownleaf"}, v1...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	return out.String()
}

// TestOwnLeafWhenDelegated: in a delegated cgroup the broker moves into
// <own>/broker in every hierarchy, its memory cap lands there, and the
// runs are born beside it, not under it.
func TestOwnLeafWhenDelegated(t *testing.T) {
	v2, v1 := ownTestCgroups(t, true)
	out := runOwnLeaf(t, v2, v1)
	rel := func(dir string) string {
		// /proc/self/cgroup paths are relative to the hierarchy's root.
		l, _ := detectLayout()
		for _, m := range append([]string{l.v2Mount}, mountsOf(l)...) {
			if r, ok := strings.CutPrefix(dir, m); ok && m != "" {
				return r
			}
		}
		return dir
	}
	if !strings.Contains(out, "limit: <nil>") {
		t.Errorf("own memory limit not set:\n%s", out)
	}
	runPart, selfPart, _ := strings.Cut(out, "self:\n")
	if !strings.Contains(selfPart, "0::"+rel(v2)+"/"+ownLeafName+"\n") {
		t.Errorf("the process is not in %s/%s:\n%s", v2, ownLeafName, out)
	}
	if !strings.Contains(runPart, "0::"+rel(v2)+"/"+defaultCgroupName+"/run-") {
		t.Errorf("the run is not beside the leaf:\n%s", out)
	}
	for _, d := range v1 {
		if !strings.Contains(selfPart, ":"+rel(d)+"/"+ownLeafName+"\n") {
			t.Errorf("not in the v1 leaf %s/%s:\n%s", d, ownLeafName, out)
		}
		if strings.Contains(d, "/memory/") {
			b, err := os.ReadFile(filepath.Join(d, ownLeafName, "memory.limit_in_bytes"))
			if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(300<<20) {
				t.Errorf("leaf memory limit %q %v, want %d", b, err, 300<<20)
			}
			if !strings.Contains(runPart, ":"+rel(d)+"/"+defaultCgroupName+"/run-") {
				t.Errorf("the run is not beside the v1 leaf:\n%s", out)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(v2, ownLeafName, "memory.max")); err == nil && strings.TrimSpace(string(b)) != fmt.Sprint(300<<20) {
		t.Errorf("cgroup2 leaf memory.max %q", b)
	}
}

// TestNoOwnLeafWithoutDelegation: an undelegated cgroup is not the
// broker's to rearrange.
func TestNoOwnLeafWithoutDelegation(t *testing.T) {
	v2, v1 := ownTestCgroups(t, false)
	out := runOwnLeaf(t, v2, v1)
	if !strings.Contains(out, "own: \n") || !strings.Contains(out, "limit: "+ErrNoOwnCgroup.Error()) {
		t.Errorf("moved without delegation:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(v2, ownLeafName)); err == nil {
		t.Error("a leaf was created")
	}
}

// mountsOf lists the v1 mount points of the layout's hierarchies.
func mountsOf(l cgroupLayout) []string {
	mf, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer mf.Close()
	mounts, _ := parseMountinfo(mf)
	var out []string
	for _, m := range mounts {
		if m.fstype == "cgroup" {
			out = append(out, m.point)
		}
	}
	return out
}
