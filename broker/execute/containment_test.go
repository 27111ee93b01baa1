package execute

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// uniqueSleep is a sleep argument no other process on the host uses, so
// the process can be found by its command line.
var sleepSeq atomic.Int64

func uniqueSleep() string {
	return fmt.Sprintf("97.%d%06d", os.Getpid()%1000, sleepSeq.Add(1))
}

// findProcs lists live processes whose argv is exactly argv.
func findProcs(argv ...string) []int {
	want := strings.Join(argv, "\x00") + "\x00"
	names, _ := os.ReadDir("/proc")
	var out []int
	for _, n := range names {
		pid, err := strconv.Atoi(n.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + n.Name() + "/cmdline")
		if err == nil && string(b) == want && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// TestTimeoutKillsSetsidTree: a stage whose descendants sit in sessions
// of their own and wait outlives the timeout; the whole tree dies with the
// run. The test program prints the grandchild's pid.
func TestTimeoutKillsSetsidTree(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		// The timeout also covers starting the helper; leave it room on a
		// loaded machine.
		res := run(t, r, Limits{Timeout: 3 * time.Second}, childStage(t, "daemonize", "wait"))
		pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
		if err != nil || pid <= 0 {
			t.Fatalf("no grandchild pid in %q (result %+v)", res.Stdout, res)
		}
		if !res.TimedOut || res.Canceled || res.ExitCode != -1 || res.Stages[0].Signal != "SIGKILL" {
			t.Errorf("result %+v", res)
		}
		for _, p := range []int{pid, res.Stages[0].PID} {
			if alive(p) {
				t.Errorf("pid %d survived the run", p)
				_ = unix.Kill(p, unix.SIGKILL)
			}
		}
	})
}

// TestDetachedChildrenDie: when the stages are done, whatever they left
// behind in another session is killed before Run returns. The test program
// double-forks (the middle process exits, orphaning a setsid sleeper) and
// prints the sleeper's pid.
func TestDetachedChildrenDie(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		res := run(t, r, Limits{Timeout: 8 * time.Second}, childStage(t, "daemonize"))
		pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
		if err != nil || pid <= 0 {
			t.Fatalf("no grandchild pid in %q (stderr %q)", res.Stdout, res.Stderr)
		}
		if res.TimedOut || res.ExitCode != 0 {
			t.Errorf("the run should end with its stage: %+v", res)
		}
		if alive(pid) {
			t.Errorf("double-forked grandchild %d survived the run", pid)
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	})
}

// TestSetsidUtilityDies: /usr/bin/setsid forks when it is a group leader
// and its parent exits at once; the detached sleep must not survive. As a
// control, the same command run directly leaves the sleep behind.
func TestSetsidUtilityDies(t *testing.T) {
	requireRoot(t)
	arg := uniqueSleep()
	control := exec.Command("/usr/bin/setsid", "/usr/bin/sleep", arg)
	control.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a group leader, as our stages are
	if err := control.Run(); err != nil {
		t.Fatal(err)
	}
	var left []int
	waitFor(func() bool { left = findProcs("/usr/bin/sleep", arg); return len(left) > 0 })
	if len(left) == 0 {
		t.Fatal("control: setsid did not leave a detached sleep behind")
	}
	for _, pid := range left {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	forEachMode(t, func(t *testing.T, r *Runner) {
		arg := uniqueSleep()
		res := run(t, r, Limits{Timeout: 5 * time.Second}, stage("/usr/bin/setsid", "/usr/bin/sleep", arg))
		if res.TimedOut {
			t.Errorf("timed out: %+v", res)
		}
		// setsid -w waits for the sleep: the timeout ends both.
		arg2 := uniqueSleep()
		res = run(t, r, Limits{Timeout: time.Second}, stage("/usr/bin/setsid", "-w", "/usr/bin/sleep", arg2))
		if !res.TimedOut {
			t.Errorf("setsid -w sleep did not time out: %+v", res)
		}
		for _, a := range []string{arg, arg2} {
			if left := findProcs("/usr/bin/sleep", a); len(left) > 0 {
				t.Errorf("detached sleep %s survived: %v", a, left)
				for _, pid := range left {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
	})
}

// TestForkBombCapped: the task limit stops a stage that forks without end,
// and nothing it started survives.
func TestForkBombCapped(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		if !r.Info().PidsController {
			t.Skip("no pids controller on this host")
		}
		const tasks = 24
		res := run(t, r, Limits{ChildTasks: tasks, Timeout: 8 * time.Second}, childStage(t, "forkbomb", "300"))
		if !res.TaskLimitHit {
			t.Errorf("task limit not hit: %+v stderr %q", res, truncate(string(res.Stderr), 300))
		}
		// The Go test program may itself die when it cannot get a thread;
		// if it printed a count, the count is under the cap.
		if n, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout))); err == nil && (n >= tasks || n <= 0) {
			t.Errorf("started %d processes with a cap of %d", n, tasks)
		}
		if left := findProcs("/usr/bin/sleep", "30"); len(left) > 0 {
			for _, pid := range left {
				if st, _ := os.ReadFile("/proc/" + itoa(pid) + "/cgroup"); strings.Contains(string(st), "nannyagent-exec") {
					t.Errorf("fork bomb child %d survived", pid)
				}
			}
		}
	})
}

// TestMemoryCapKillsHog: a stage that touches more memory than the cap is
// OOM-killed, and the result says so; a small one runs.
func TestMemoryCapKillsHog(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		if !r.Info().MemoryController {
			t.Skip("no memory controller on this host")
		}
		lim := Limits{ChildMemory: 64 << 20, Timeout: 8 * time.Second}
		res := run(t, r, lim, childStage(t, "memhog", "256"))
		if res.Stages[0].Signal != "SIGKILL" || !res.MemoryLimitHit || strings.Contains(string(res.Stdout), "survived") {
			t.Errorf("hog not stopped: %+v", res)
		}
		res = run(t, r, lim, childStage(t, "memhog", "16"))
		if res.ExitCode != 0 || res.MemoryLimitHit || !strings.Contains(string(res.Stdout), "survived 16") {
			t.Errorf("small allocation failed: %+v stderr %q", res, res.Stderr)
		}
	})
}

// TestOutputCaps: output past the cap is dropped and flagged, while the
// writer runs to its normal end.
func TestOutputCaps(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		res := run(t, r, Limits{StdoutBytes: 1000, StderrBytes: 500}, childStage(t, "spew", strconv.Itoa(4<<20)))
		if len(res.Stdout) != 1000 || !res.StdoutTruncated || strings.Trim(string(res.Stdout), "x") != "" {
			t.Errorf("stdout: %d bytes, truncated %v", len(res.Stdout), res.StdoutTruncated)
		}
		if len(res.Stderr) != 500 || !res.StderrTruncated || strings.Trim(string(res.Stderr), "y") != "" {
			t.Errorf("stderr: %d bytes, truncated %v", len(res.Stderr), res.StderrTruncated)
		}
		if res.ExitCode != 0 || res.Stages[0].Signal != "" {
			t.Errorf("writer did not end normally: %+v", res.Stages)
		}
		res = run(t, r, Limits{StdoutBytes: 1000, StderrBytes: 1000}, childStage(t, "spew", "1000"))
		if len(res.Stdout) != 1000 || res.StdoutTruncated || len(res.Stderr) != 1000 || res.StderrTruncated {
			t.Errorf("exactly at the cap: %d/%v %d/%v", len(res.Stdout), res.StdoutTruncated, len(res.Stderr), res.StderrTruncated)
		}
	})
}

// TestCancel: the caller's context ends the run, which is reported as
// canceled rather than timed out.
func TestCancel(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r.afterStart = func([]int) { cancel() }
		res, err := r.Run(ctx, Request{Stages: []Stage{stage("/usr/bin/sleep", "100")}})
		if err != nil || !res.Canceled || res.TimedOut || res.Stages[0].Signal != "SIGKILL" {
			t.Errorf("%v %+v", err, res)
		}
	})
}

// TestCloseEndsRuns: closing the runner kills runs in progress and refuses
// new ones.
func TestCloseEndsRuns(t *testing.T) {
	r := newTestRunner(t, Config{})
	started := make(chan struct{})
	r.afterStart = func([]int) { close(started) }
	done := make(chan *Result)
	go func() {
		res, _ := r.Run(context.Background(), Request{Stages: []Stage{stage("/usr/bin/sleep", "100")}})
		done <- res
	}()
	<-started
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res == nil || !res.Canceled {
		t.Errorf("run after Close: %+v", res)
	}
	if _, err := r.Run(context.Background(), Request{Stages: []Stage{stage("/usr/bin/true")}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
}

// TestConcurrentRunsBounded: with 2 slots and a queue of 2, six runs at
// once give four results and two fast refusals, and never more than two
// run at the same time.
func TestConcurrentRunsBounded(t *testing.T) {
	r := newTestRunner(t, Config{MaxConcurrent: 2, MaxQueued: 2})
	var mu sync.Mutex
	running, peak := 0, 0
	r.afterStart = func([]int) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	var ok, busy atomic.Int32
	for range 6 {
		wg.Go(func() {
			res, err := r.Run(context.Background(), Request{Stages: []Stage{stage("/usr/bin/sleep", "1")}})
			switch {
			case errors.Is(err, ErrBusy):
				busy.Add(1)
			case err == nil && res.ExitCode == 0:
				mu.Lock()
				running--
				mu.Unlock()
				ok.Add(1)
			default:
				t.Errorf("run: %v %+v", err, res)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 4 || busy.Load() != 2 || peak > 2 {
		t.Errorf("ok %d, busy %d, peak concurrency %d", ok.Load(), busy.Load(), peak)
	}
}

// TestQueuedRunGivesUp: a queued run waits only as long as its context.
func TestQueuedRunGivesUp(t *testing.T) {
	r := newTestRunner(t, Config{MaxConcurrent: 1, MaxQueued: 1})
	started := make(chan struct{})
	r.afterStart = func([]int) { close(started) }
	first := make(chan error)
	go func() {
		_, err := r.Run(context.Background(), Request{Stages: []Stage{stage("/usr/bin/sleep", "1")}})
		first <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := r.Run(ctx, Request{Stages: []Stage{stage("/usr/bin/true")}})
	if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("queued run: %v", err)
	}
	if err := <-first; err != nil {
		t.Error(err)
	}
}

// TestOversizedRequestsRefused: huge requests are refused by the limits
// before any path is resolved, cgroup created or process started.
func TestOversizedRequestsRefused(t *testing.T) {
	r := newTestRunner(t, Config{})
	r.beforeLaunch = func() { t.Error("an oversized request got past the checks") }
	many := make([]Stage, 1000)
	for i := range many {
		many[i] = stage("/usr/bin/true")
	}
	huge := stage("/usr/bin/echo", strings.Repeat("a", 64<<20))
	manyArgs := stage(append([]string{"/usr/bin/echo"}, make([]string, 100000)...)...)
	wide := []Stage{stage("/usr/bin/echo", strings.Repeat("b", 100<<10), strings.Repeat("b", 100<<10))}
	before := r.janitor.taken.Load()
	for name, stages := range map[string][]Stage{
		"1000 stages":        many,
		"64 MiB argument":    {huge},
		"100000 arguments":   {manyArgs},
		"200 KiB in a stage": wide,
		"no stages":          nil,
	} {
		_, err := r.Run(context.Background(), Request{Stages: stages})
		if !errors.Is(err, ErrLimit) && !(len(stages) == 0 && errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if r.janitor.taken.Load() != before {
		t.Error("a run cgroup was created for a refused request")
	}
}

// TestLimitsAreThePolicys: the runner enforces the limits it is given and
// no cap of its own: output, stages and argument bytes above the values
// it once clamped to are honoured, and the argument bytes count per stage
// without the program, as the policy counts them.
func TestLimitsAreThePolicys(t *testing.T) {
	r := newTestRunner(t, Config{})
	const big = 12 << 20 // above the 8 MiB the runner used to clamp output to
	res := run(t, r, Limits{StdoutBytes: 16 << 20, StderrBytes: 16 << 20, Timeout: 20 * time.Second}, childStage(t, "spew", strconv.Itoa(big)))
	if len(res.Stdout) != big || res.StdoutTruncated || len(res.Stderr) != big || res.StderrTruncated {
		t.Errorf("16 MiB output limit: got %d/%v and %d/%v bytes", len(res.Stdout), res.StdoutTruncated, len(res.Stderr), res.StderrTruncated)
	}
	// 20 stages: the runner once refused more than 16 whatever it was told.
	many := make([]Stage, 20)
	for i := range many {
		many[i] = stage("/usr/bin/true")
	}
	if _, err := r.Run(context.Background(), Request{Stages: many, Limits: Limits{MaxStages: 20}}); err != nil {
		t.Errorf("20 stages with a limit of 20: %v", err)
	}
	if _, err := r.Run(context.Background(), Request{Stages: many, Limits: Limits{MaxStages: 19}}); !errors.Is(err, ErrLimit) {
		t.Errorf("20 stages with a limit of 19: %v", err)
	}
	// Exactly the argument bytes allowed, in each of two stages, with a
	// long program path that does not count.
	arg := strings.Repeat("c", 1000)
	two := []Stage{stage("/usr/bin/echo", arg), stage("/usr/bin/true", arg)}
	if _, err := r.Run(context.Background(), Request{Stages: two, Limits: Limits{MaxArgBytes: 1000}}); err != nil {
		t.Errorf("1000 argument bytes per stage with a limit of 1000: %v", err)
	}
	if _, err := r.Run(context.Background(), Request{Stages: two, Limits: Limits{MaxArgBytes: 999}}); !errors.Is(err, ErrLimit) {
		t.Errorf("1000 argument bytes with a limit of 999: %v", err)
	}
}

func TestEffectiveLimits(t *testing.T) {
	cases := []struct {
		in, want Limits
	}{
		{Limits{}, DefaultLimits},
		{Limits{Timeout: -1, StdoutBytes: -5}, DefaultLimits},
		// Large values stay: the policy's hard caps are the only caps.
		{Limits{Timeout: time.Hour, StdoutBytes: 1 << 30, StderrBytes: 1 << 30, MaxStages: 1 << 20, MaxArgs: 1 << 20, MaxArgBytes: 1 << 30, ChildTasks: 1 << 20, ChildMemory: 1 << 40},
			Limits{Timeout: time.Hour, StdoutBytes: 1 << 30, StderrBytes: 1 << 30, MaxStages: 1 << 20, MaxArgs: 1 << 20, MaxArgBytes: 1 << 30, ChildTasks: 1 << 20, ChildMemory: 1 << 40}},
		{Limits{Timeout: time.Second, ChildTasks: 3}, func() Limits { l := DefaultLimits; l.Timeout, l.ChildTasks = time.Second, 3; return l }()},
	}
	for _, tc := range cases {
		if got := tc.in.effective(); got != tc.want {
			t.Errorf("%+v.effective() = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestRequestChecks(t *testing.T) {
	ok := stage("/usr/bin/cat", "/etc/passwd")
	cases := []struct {
		name  string
		st    Stage
		judge PathJudge
	}{
		{"index 0", withPathAt(ok, PathOperand{Index: 0, Path: "/usr/bin/cat", Open: OpenFD}), &testJudge{}},
		{"index out of range", withPathAt(ok, PathOperand{Index: 2, Path: "/etc/passwd", Open: OpenFD}), &testJudge{}},
		{"path differs from argv", withPathAt(ok, PathOperand{Index: 1, Path: "/etc/shadow", Open: OpenFD}), &testJudge{}},
		{"no open mode", withPathAt(ok, PathOperand{Index: 1, Path: "/etc/passwd"}), &testJudge{}},
		{"twice", withPathAt(withPathAt(ok, PathOperand{Index: 1, Path: "/etc/passwd", Open: OpenFD}), PathOperand{Index: 1, Path: "/etc/passwd", Open: OpenFD}), &testJudge{}},
		{"no judge", withPathAt(ok, PathOperand{Index: 1, Path: "/etc/passwd", Open: OpenFD}), nil},
		{"both stderr redirections", Stage{Program: "/usr/bin/true", Argv: []string{"/usr/bin/true"}, StderrToNull: true, StderrToStdout: true}, nil},
	}
	for _, tc := range cases {
		if err := checkStages([]Stage{tc.st}, tc.judge); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := checkStages([]Stage{withPathAt(ok, PathOperand{Index: 1, Path: "/etc/passwd", Open: OpenFD})}, &testJudge{}); err != nil {
		t.Errorf("valid stage: %v", err)
	}
}

func withPathAt(s Stage, op PathOperand) Stage {
	s.Paths = append(append([]PathOperand{}, s.Paths...), op)
	return s
}

func TestInfo(t *testing.T) {
	requireRoot(t)
	l, err := detectLayout()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := newTestRunner(t, m.cfg)
			info := r.Info()
			if info.Layout != l.kind() || l.kind() == "none" {
				t.Errorf("layout %q, detected %q", info.Layout, l.kind())
			}
			if p := info.Proto(); p.V2Kill != info.V2Kill || p.V2Path != info.V2Path || p.MemoryController != info.MemoryController || p.PidsController != info.PidsController {
				t.Errorf("proto %v", p)
			}
			if info.Subreaper != (m.cfg.Containment == ContainSubreaper) || info.V2Kill == info.Subreaper {
				t.Errorf("%+v", info)
			}
			if info.V2Kill && info.V2Path != filepath.Join(l.v2Self, defaultCgroupName) {
				t.Errorf("v2 path %q", info.V2Path)
			}
			if (l.v1Self["memory"] != "") && !info.MemoryController || (l.v1Self["pids"] != "") && !info.PidsController {
				t.Errorf("controllers: %+v with layout %+v", info, l)
			}
		})
	}
}

// TestStaleRunsSwept: run cgroups of a broker that died are killed and
// removed by the next New; those of live processes are left alone.
func TestStaleRunsSwept(t *testing.T) {
	first := newTestRunner(t, Config{})
	dead := 0
	for pid := 32000; pid > 1000; pid-- {
		if unix.Kill(pid, 0) == unix.ESRCH {
			dead = pid
			break
		}
	}
	sleeper := exec.Command("/usr/bin/sleep", "100")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	stale := fmt.Sprintf("run-%d-1", dead)
	live := fmt.Sprintf("run-%d-999999-1", os.Getpid())
	var dirs []string
	for _, p := range first.cg.parents() {
		for _, name := range []string{stale, live} {
			d := filepath.Join(p, name)
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, d)
		}
		if err := writeFile(filepath.Join(p, stale, "cgroup.procs"), itoa(sleeper.Process.Pid)); err != nil {
			t.Fatal(err)
		}
	}
	second := newTestRunner(t, Config{})
	_ = second
	if err := <-waited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("process in the stale run cgroup: %v", err)
	}
	for _, d := range dirs {
		_, err := os.Stat(d)
		if strings.Contains(d, stale) != errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v", d, err)
		}
		if strings.Contains(d, live) {
			_ = removeCgroup(d, time.Second)
		}
	}
}

// TestOverlappingRunnersLeaveNoParent: two runners in one cgroup share the
// parents; whichever closes last removes them, and the other keeps working
// after the first closed.
func TestOverlappingRunnersLeaveNoParent(t *testing.T) {
	requireRoot(t)
	a, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	parents := b.cg.parents()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := b.Run(context.Background(), Request{Stages: []Stage{stage("/usr/bin/true")}})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("second runner after the first closed: %v %v", res, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Another package's tests may run a runner in this same cgroup at the
	// same time: a parent may stay only while it holds someone's runs.
	for _, p := range parents {
		entries, err := os.ReadDir(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if !slices.ContainsFunc(entries, func(e os.DirEntry) bool { return e.IsDir() && strings.HasPrefix(e.Name(), "run-") }) {
			t.Errorf("parent cgroup %s left behind empty: %v", p, err)
		}
	}
}
