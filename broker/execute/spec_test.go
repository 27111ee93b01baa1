package execute

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// childSpec runs the test binary in one of the childMain modes.
func childSpec(t testing.TB, mode string, args ...string) Spec {
	t.Helper()
	st := childStage(t, mode, args...)
	return Spec{Path: st.Program, Argv: st.Argv}
}

// TestStartAttachedEndsWithItsContext: an attached run, and the setsid
// grandchild it left waiting, die when the caller's context ends.
func TestStartAttachedEndsWithItsContext(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rd, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		spec := childSpec(t, "daemonize", "wait")
		spec.Stdout = w
		p, err := r.StartAttached(ctx, spec)
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		// The grandchild's pid, once it runs.
		line, err := bufio.NewReader(rd).ReadString('\n')
		pid, _ := strconv.Atoi(strings.TrimSpace(line))
		if pid <= 0 {
			t.Fatalf("no grandchild pid printed: %q %v", line, err)
		}
		cancel()
		exit, err := p.Wait(context.Background())
		if err != nil || !exit.Killed || exit.TimedOut || exit.Signal != "SIGKILL" {
			t.Errorf("exit %+v, %v", exit, err)
		}
		if alive(pid) || alive(p.Pid()) {
			t.Errorf("the run's tree survived its context: %d %d", p.Pid(), pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// TestStartDetachedOutlivesItsContext: a detached run keeps running after
// the context that started it ended, until Kill ends it and its tree.
func TestStartDetachedOutlivesItsContext(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		ctx, cancel := context.WithCancel(context.Background())
		p, err := r.StartDetached(ctx, childSpec(t, "daemonize", "wait"))
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case <-p.Done():
			t.Fatalf("the detached run ended with the request's context: %+v", p.exit)
		case <-time.After(500 * time.Millisecond):
		}
		if r.DetachedRuns() != 1 {
			t.Errorf("%d detached runs counted, want 1", r.DetachedRuns())
		}
		if !alive(p.Pid()) {
			t.Fatal("the detached program is gone")
		}
		p.Kill()
		exit, err := p.Wait(context.Background())
		if err != nil || !exit.Killed || exit.Code != -1 {
			t.Errorf("exit %+v, %v", exit, err)
		}
		if alive(p.Pid()) {
			t.Error("the detached program survived Kill")
		}
		if r.DetachedRuns() != 0 {
			t.Errorf("%d detached runs counted after the end", r.DetachedRuns())
		}
	})
}

// TestDetachedRunHasADeadline: a detached run still ends at its timeout.
func TestDetachedRunHasADeadline(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		spec := Spec{Path: "/usr/bin/sleep", Argv: []string{"/usr/bin/sleep", "100"}, Limits: Limits{Timeout: 500 * time.Millisecond}}
		p, err := r.StartDetached(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		exit, err := p.Wait(context.Background())
		if err != nil || !exit.TimedOut || exit.Killed || exit.Signal != "SIGKILL" {
			t.Errorf("exit %+v, %v", exit, err)
		}
	})
}

// TestSignalReachesTheProgram: Signal delivers to the program itself,
// which can end on it (bpftrace prints its maps on SIGINT).
func TestSignalReachesTheProgram(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		p, err := r.StartAttached(context.Background(), Spec{Path: "/usr/bin/sleep", Argv: []string{"/usr/bin/sleep", "100"}})
		if err != nil {
			t.Fatal(err)
		}
		// The helper path reports the pid once the process exists.
		if !waitFor(func() bool { return alive(p.Pid()) }) {
			t.Fatal("not running")
		}
		if err := p.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		exit, err := p.Wait(context.Background())
		if err != nil || exit.Signal != "SIGINT" || exit.Killed || exit.TimedOut {
			t.Errorf("exit %+v, %v", exit, err)
		}
		if err := p.Signal(syscall.SIGINT); err == nil {
			t.Error("signalling a finished run succeeded")
		}
	})
}

// TestOutputRunsThroughTheLauncher: a single program gets the launcher's
// environment, no_new_privs, its own run cgroup and the memory cap.
func TestOutputRunsThroughTheLauncher(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		out, exit, err := r.Output(context.Background(), Spec{Path: "/bin/sh", Argv: []string{"/bin/sh", "-c",
			"env; grep NoNewPrivs /proc/self/status; cat /proc/self/cgroup; echo err >&2; exit 3"}}, 1<<20)
		if err != nil || exit.Code != 3 {
			t.Fatalf("exit %+v, %v", exit, err)
		}
		s := string(out)
		for _, want := range []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin\n", "NoNewPrivs:\t1", "/" + r.cfg.CgroupName + "/" + r.cg.prefix, "err\n"} {
			if !strings.Contains(s, want) {
				t.Errorf("output lacks %q:\n%s", want, s)
			}
		}
		if strings.Contains(s, "HOME=") || strings.Contains(s, "GOFLAGS") {
			t.Errorf("the broker's environment leaked:\n%s", s)
		}
		out, exit, err = r.Output(context.Background(), Spec{Path: "/bin/sh", Argv: []string{"/bin/sh", "-c", "echo $A"}, Env: []string{"A=given"}}, 1<<20)
		if err != nil || string(out) != "given\n" || exit.Code != 0 {
			t.Errorf("own environment: %q %+v %v", out, exit, err)
		}
		spec := childSpec(t, "memhog", "256")
		spec.Limits = Limits{ChildMemory: 64 << 20}
		out, exit, err = r.Output(context.Background(), spec, 1<<20)
		if err != nil || !exit.MemoryLimitHit || strings.Contains(string(out), "survived") {
			t.Errorf("memory cap: %q %+v %v", out, exit, err)
		}
	})
}

// TestSpecRefusals: a Spec is checked like a stage before anything starts.
func TestSpecRefusals(t *testing.T) {
	r := newTestRunner(t, Config{})
	for name, spec := range map[string]Spec{
		"relative":   {Path: "sleep"},
		"unclean":    {Path: "/usr/bin/../bin/sleep"},
		"nul":        {Path: "/usr/bin/echo", Argv: []string{"/usr/bin/echo", "a\x00b"}},
		"env nul":    {Path: "/usr/bin/true", Env: []string{"A=\x00"}},
		"missing":    {Path: "/nonexistent/tool"},
		"bad run_as": {Path: "/usr/bin/true", RunAs: "no-such-account-here"},
	} {
		if _, err := r.StartAttached(context.Background(), spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestSetMaxConcurrentAppliesToWaitingRuns: runs that take a slot wait for
// one; raising the limit lets the waiting ones start at once, and lowering
// it holds new runs back.
func TestSetMaxConcurrentAppliesToWaitingRuns(t *testing.T) {
	r := newTestRunner(t, Config{MaxConcurrent: 1, MaxQueued: 4})
	var running, peak atomic.Int32
	var mu sync.Mutex
	r.afterStart = func([]int) {
		mu.Lock()
		defer mu.Unlock()
		peak.Store(max(peak.Load(), running.Add(1)))
	}
	sleep := Spec{Path: "/usr/bin/sleep", Argv: []string{"/usr/bin/sleep", "0.5"}, Slot: true}
	runAll := func(n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				p, err := r.StartAttached(context.Background(), sleep)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = p.Wait(context.Background())
				running.Add(-1)
			})
		}
		wg.Wait()
	}
	runAll(3)
	if peak.Load() != 1 {
		t.Errorf("limit 1: peak %d", peak.Load())
	}
	peak.Store(0)
	r.SetMaxConcurrent(3)
	runAll(3)
	if peak.Load() != 3 {
		t.Errorf("limit 3: peak %d", peak.Load())
	}
	if l, q := r.gate.size(); l != 3 || q != 3 {
		t.Errorf("gate %d/%d, want 3 running and 3 waiting", l, q)
	}
}
