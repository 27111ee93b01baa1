package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// canaryPrograms are the programs gopsutil can run on some platform (from
// its source) plus common helpers a collector might be tempted to call.
var canaryPrograms = []string{
	"lsb_release", "loginctl", "lsof", "docker", "ps", "sysctl", "getconf",
	"uname", "uptime", "w", "who", "hostid", "hostname", "ifconfig", "netstat",
	"iostat", "ipmitool", "mount", "lsblk", "udevadm", "dmidecode", "swapctl",
	"sar", "kstat", "prtconf", "psrinfo", "zonename", "sw_vers", "ioreg",
	"system_profiler", "nproc", "df", "free", "ip", "sh", "bash", "cat",
}

const (
	envCanaryFile = "NANNY_TEST_CANARY_FILE"
	envChildMode  = "NANNY_TEST_NOEXEC_CHILD"
)

// TestMain lets the test binary play two extra roles: a canary program
// (when started under one of the canary names it records that and exits)
// and the isolated child of TestCollectRunsNoProgram.
func TestMain(m *testing.M) {
	if slices.Contains(canaryPrograms, filepath.Base(os.Args[0])) {
		if p := os.Getenv(envCanaryFile); p != "" {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
			if err == nil {
				fmt.Fprintln(f, strings.Join(os.Args, " "))
				f.Close()
			}
		}
		os.Exit(0)
	}
	if mode := os.Getenv(envChildMode); mode != "" {
		os.Exit(noExecChild(mode))
	}
	os.Exit(m.Run())
}

// childReport is what the isolated child tells the test.
type childReport struct {
	Isolated       bool   `json:"isolated"`
	ChildrenMinflt int64  `json:"children_minflt"`
	ChildrenNvcsw  int64  `json:"children_nvcsw"`
	SourceErrors   int    `json:"source_errors"`
	Err            string `json:"err,omitempty"`
}

// noExecChild runs in a fresh mount namespace when root: it hides the
// system's program directories under tmpfs full of canaries (links to this
// binary), points PATH at them, then either collects metrics ("collect") or
// deliberately runs programs ("control", proving the detectors work). It
// reports getrusage(RUSAGE_CHILDREN): any program started and waited for
// shows up there, whatever its name.
func noExecChild(mode string) int {
	rep := childReport{}
	self, err := os.Executable()
	if err == nil && os.Getuid() == 0 {
		err = plantCanaries(self)
		rep.Isolated = err == nil
	}
	if err != nil {
		rep.Err = err.Error()
	}
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	switch mode {
	case "collect":
		resp := New(Config{}).Collect(context.Background())
		rep.SourceErrors = len(resp.GetErrors())
	case "control":
		_ = exec.Command("lsb_release", "-a").Run()
		_ = exec.Command("/usr/bin/loginctl", "list-sessions").Run()
	}
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_CHILDREN, &ru); err == nil {
		rep.ChildrenMinflt, rep.ChildrenNvcsw = ru.Minflt, ru.Nvcsw
	}
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

func plantCanaries(self string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	for _, dir := range []string{"/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin"} {
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() { // merged-/usr symlinks are covered by their targets
			continue
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
		for _, name := range canaryPrograms {
			if err := os.Symlink(self, filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

func runNoExecChild(t *testing.T, mode string) (childReport, []byte) {
	t.Helper()
	canary := filepath.Join(t.TempDir(), "canary")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChildMode+"="+mode, envCanaryFile+"="+canary)
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	ran, _ := os.ReadFile(canary)
	return rep, ran
}

// TestCollectRunsNoProgram pins that CollectMetrics starts no program: a
// control run that does start programs trips both detectors, the collector
// run trips neither.
func TestCollectRunsNoProgram(t *testing.T) {
	if os.Getuid() != 0 {
		t.Log("not root: canaries only on PATH lookups are skipped; rusage detector still active")
	}
	control, ran := runNoExecChild(t, "control")
	if control.Err != "" && os.Getuid() == 0 {
		t.Fatalf("could not isolate the child: %s", control.Err)
	}
	if control.ChildrenMinflt == 0 && control.ChildrenNvcsw == 0 {
		t.Fatalf("control run started programs but rusage saw no children: %+v", control)
	}
	if control.Isolated && !strings.Contains(string(ran), "lsb_release") {
		t.Fatalf("control run started lsb_release but the canary stayed silent: %q", ran)
	}

	got, ran := runNoExecChild(t, "collect")
	if len(ran) != 0 {
		t.Errorf("collector started programs: %s", ran)
	}
	if got.ChildrenMinflt != 0 || got.ChildrenNvcsw != 0 {
		t.Errorf("collector reaped child processes: %+v", got)
	}
	if got.SourceErrors != 0 {
		t.Errorf("collector had %d source errors in the isolated child", got.SourceErrors)
	}
}
