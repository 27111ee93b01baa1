package execute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// childFlag makes the test binary act as a small test program when the
// runner executes it (the runner's environment is fixed, so the mode goes
// in argv).
const childFlag = "__execute_child"

func TestMain(m *testing.M) {
	if IsHelper() {
		HelperMain()
	}
	if len(os.Args) > 2 && os.Args[1] == childFlag {
		os.Exit(childMain(os.Args[2], os.Args[3:]))
	}
	goleak.VerifyTestMain(m)
}

// childMain is the test program. Modes:
//
//	daemonize [wait]  start "middle" in a new session and wait for it
//	middle [wait]     start "sleeper" in a new session, print its pid, and
//	                  exit (or, with wait, wait for it)
//	sleeper           sleep 100 s
//	forkbomb N        try to start N sleeping processes, print how many ran
//	memhog MiB        touch MiB of memory, print "survived"
//	spew N            write N bytes to stdout and N to stderr
func childMain(mode string, args []string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 100
	}
	spawn := func(m string) (*os.Process, error) {
		return os.StartProcess(self, append([]string{self, childFlag, m}, args...), &os.ProcAttr{
			Files: []*os.File{nil, os.Stdout, os.Stderr},
			Sys:   &syscall.SysProcAttr{Setsid: true},
		})
	}
	switch mode {
	case "daemonize":
		p, err := spawn("middle")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_, _ = p.Wait()
	case "middle":
		p, err := spawn("sleeper")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(p.Pid)
		if len(args) > 0 && args[0] == "wait" {
			_, _ = p.Wait()
		}
	case "sleeper":
		time.Sleep(100 * time.Second)
	case "forkbomb":
		n, _ := strconv.Atoi(args[0])
		started := 0
		for range n {
			p, err := os.StartProcess("/usr/bin/sleep", []string{"/usr/bin/sleep", "30"}, &os.ProcAttr{})
			if err == nil {
				started++
				_ = p.Release()
			}
		}
		fmt.Println(started)
	case "memhog":
		mib, _ := strconv.Atoi(args[0])
		b := make([]byte, mib<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Println("survived", len(b)>>20)
	case "spew":
		n, _ := strconv.Atoi(args[0])
		_, _ = os.Stdout.Write(bytes.Repeat([]byte("x"), n))
		_, _ = os.Stderr.Write(bytes.Repeat([]byte("y"), n))
	case "ownleaf":
		return ownLeafMain(args)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		return 100
	}
	return 0
}

// ownLeafMain joins the v1 cgroups named in args (as systemd would have
// placed the service), starts a runner with OwnCgroupAuto, caps its own
// memory and runs one command, printing where everything sits.
func ownLeafMain(args []string) int {
	for _, dir := range args {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	r, err := New(Config{OwnCgroup: OwnCgroupAuto})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Close()
	fmt.Printf("limit: %v\n", r.SetOwnMemoryLimit(300<<20))
	res, err := r.Run(context.Background(), Request{Stages: []Stage{stage("/usr/bin/cat", "/proc/self/cgroup")}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	self, _ := os.ReadFile("/proc/self/cgroup")
	fmt.Printf("own: %s\nrun:\n%sself:\n%s", r.Info().OwnCgroup, res.Stdout, self)
	return 0
}

// childStage runs the test binary in one of the childMain modes.
func childStage(t testing.TB, mode string, args ...string) Stage {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return stage(append([]string{self, childFlag, mode}, args...)...)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups, changes uids and reads other processes")
	}
}

// modes are the two kill paths; every containment test runs on both.
var modes = []struct {
	name string
	cfg  Config
}{
	{"cgroup", Config{}},
	{"subreaper", Config{Containment: ContainSubreaper}},
}

func forEachMode(t *testing.T, fn func(t *testing.T, r *Runner)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			fn(t, newTestRunner(t, m.cfg))
		})
	}
}

// newTestRunner makes a runner that is closed at the end of the test, and
// checks that no run cgroup and no parent cgroup is left behind.
func newTestRunner(t testing.TB, cfg Config) *Runner {
	t.Helper()
	requireRoot(t)
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if cfg.Containment == ContainAuto && !r.Info().V2Kill {
		r.Close()
		t.Skip("no cgroup v2 with cgroup.kill on this host")
	}
	parents := r.cg.parents()
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		prefix := r.cg.prefix
		for _, p := range parents {
			entries, _ := os.ReadDir(p)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), prefix) {
					t.Errorf("run cgroup left behind: %s", filepath.Join(p, e.Name()))
				}
			}
		}
		for _, p := range r.cg.created {
			// Another process's runner (a broker of another test binary
			// on this machine) may share the parent while it holds runs.
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) && !holdsOtherRuns(p, prefix) {
				t.Errorf("parent cgroup %s not removed: %v", p, err)
			}
		}
	})
	return r
}

// holdsOtherRuns reports whether parent holds run cgroups that are not
// this runner's.
func holdsOtherRuns(parent, prefix string) bool {
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "run-") && !strings.HasPrefix(e.Name(), prefix) {
			return true
		}
	}
	return false
}

func stage(argv ...string) Stage {
	return Stage{Program: argv[0], Argv: argv}
}

// withPath marks argv[i] as a path operand under roots.
func withPath(s Stage, i int, mode OpenMode, roots ...string) Stage {
	if len(roots) == 0 {
		roots = []string{"/"}
	}
	s.Paths = append(s.Paths, PathOperand{Index: i, Path: s.Argv[i], Roots: roots, Open: mode})
	return s
}

// testJudge stands in for the policy: a path must be under one of the
// roots and under none of deny. It records every path it was asked about.
type testJudge struct {
	deny []string
	mu   sync.Mutex
	seen []string
}

func (j *testJudge) CheckPath(p string, roots []string) error {
	j.mu.Lock()
	j.seen = append(j.seen, p)
	j.mu.Unlock()
	c := path.Clean(p)
	for _, d := range j.deny {
		if under(c, d) {
			return fmt.Errorf("denied by %s", d)
		}
	}
	for _, r := range roots {
		if under(c, r) {
			return nil
		}
	}
	return fmt.Errorf("%s is not under %v", c, roots)
}

func under(p, root string) bool {
	return root == "/" || p == root || strings.HasPrefix(p, root+"/")
}

func run(t testing.TB, r *Runner, limits Limits, stages ...Stage) *Result {
	t.Helper()
	res, err := r.Run(context.Background(), Request{Stages: stages, Limits: limits, Judge: &testJudge{}})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z' && st.state != 'X'
}

// bash runs a command line the way a shell would, with the runner's
// environment, for comparison.
func bash(t testing.TB, line string) (stdout, stderr string, code int) {
	t.Helper()
	c := exec.Command("/bin/bash", "-c", line)
	c.Env, c.Dir = fixedEnv, "/"
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("bash %q: %v", line, err)
	}
	return o.String(), e.String(), c.ProcessState.ExitCode()
}

// rootDir makes a root-owned 0755 temporary directory (t.TempDir is 0700).
func rootDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func writeFile0(t testing.TB, name, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

func strconvItoa(n int) string { return strconv.Itoa(n) }
