package reboot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/policy"
)

// fakeLauncher records what would run, with its limits, and answers with
// an exit code per program.
type fakeLauncher struct {
	mu     sync.Mutex
	runs   [][]string
	limits []execute.Limits
	exit   map[string]int
	err    error
	// timeout ends the reboot command at its deadline, killed.
	timeout bool
	block   chan struct{} // holds the reboot command until closed
	ctxs    []context.Context
}

func (f *fakeLauncher) Output(ctx context.Context, spec execute.Spec, limit int) ([]byte, execute.Exit, error) {
	argv := spec.Argv
	f.mu.Lock()
	f.runs = append(f.runs, argv)
	f.limits = append(f.limits, spec.Limits)
	f.ctxs = append(f.ctxs, ctx)
	code, err, block, timeout := f.exit[argv[0]], f.err, f.block, f.timeout
	f.mu.Unlock()
	if err != nil {
		return nil, execute.Exit{}, err
	}
	if timeout && !strings.HasSuffix(argv[0], "wall") {
		now := time.Now()
		return []byte("hung"), execute.Exit{Code: -1, Signal: "SIGKILL", TimedOut: true, Start: now, End: now}, nil
	}
	if block != nil && !strings.HasSuffix(argv[0], "wall") {
		<-block
	}
	now := time.Now()
	return []byte("output of " + argv[0]), execute.Exit{Code: code, Start: now, End: now}, nil
}

func (f *fakeLauncher) commands() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.runs...)
}

type patches struct{ running bool }

func (p *patches) Running() bool { return p.running }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	dir     string
	launch  *fakeLauncher
	patches *patches
	clock   *clock
	uptime  time.Duration
	rb      policy.Reboots
	child   execute.Limits
}

func newEnv(t *testing.T) *env {
	return &env{
		dir:     filepath.Join(t.TempDir(), "broker-state"),
		launch:  &fakeLauncher{exit: map[string]int{}},
		patches: &patches{},
		clock:   &clock{t: time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)},
		uptime:  time.Hour,
		rb: policy.Reboots{Enabled: true, Host: true, Containers: []string{"*"}, MinInterval: time.Hour,
			MinUptime: 10 * time.Minute, Timeout: time.Minute, Systemctl: "/fake/systemctl", Pct: "/fake/pct", Wall: "/fake/wall"},
		child: execute.Limits{ChildTasks: 32, ChildMemory: 64 << 20},
	}
}

// rebooter is a fresh Rebooter on the same state, as after a broker restart.
func (e *env) rebooter(t *testing.T) *Rebooter {
	t.Helper()
	r, err := New(Config{StateDir: e.dir, Patches: e.patches, Launcher: e.launch, Now: e.clock.Now,
		Uptime: func() (time.Duration, error) { return e.uptime, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.StateError(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestHostRebootRunsSystemctlAndWarnsUsers(t *testing.T) {
	e := newEnv(t)
	r := e.rebooter(t)
	out := r.Reboot(context.Background(), e.rb, e.child, Request{ID: "rb1", Reason: "Kernel \x1b[31mupdate\x1b[0m\napplied"})
	if !out.Allowed || !out.Started || !out.Warned || out.ExitCode != 0 {
		t.Fatalf("outcome %+v", out)
	}
	runs := e.launch.commands()
	if len(runs) != 2 || strings.Join(runs[1], " ") != "/fake/systemctl reboot" {
		t.Fatalf("ran %q", runs)
	}
	// The launcher bounds both children with the policy's child limits;
	// the command's deadline is reboots.timeout, wall's its own.
	e.launch.mu.Lock()
	lims := append([]execute.Limits(nil), e.launch.limits...)
	e.launch.mu.Unlock()
	for i, want := range []time.Duration{10 * time.Second, time.Minute} {
		if l := lims[i]; l.ChildTasks != 32 || l.ChildMemory != 64<<20 || l.Timeout != want {
			t.Errorf("%s ran with limits %+v", runs[i][0], l)
		}
	}
	wall := runs[0]
	if len(wall) != 3 || wall[0] != "/fake/wall" || wall[1] != "nannyagent:" ||
		wall[2] != "NannyAI reboot rb1 requested by the operator: this host reboots now. Reason: Kernel [31mupdate[0m applied" {
		t.Errorf("wall argv %q", wall)
	}
	rec, ok, err := r.state.last()
	if err != nil || !ok || rec.RebootID != "rb1" || !rec.At.Equal(e.clock.Now()) {
		t.Errorf("record %+v %v %v", rec, ok, err)
	}
	fi, err := os.Stat(filepath.Join(e.dir, RecordName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record file %v %v", fi, err)
	}
}

// The loop guard: a second host reboot inside min_interval is refused,
// also by a broker started again on the same state; a failed attempt
// counts too. Containers are not held back by it.
func TestLoopGuard(t *testing.T) {
	e := newEnv(t)
	e.launch.exit["/fake/systemctl"] = 1
	out := e.rebooter(t).Reboot(context.Background(), e.rb, e.child, Request{ID: "rb1"})
	if !out.Allowed || out.Started || out.ExitCode != 1 || !strings.Contains(out.Reason, "/fake/systemctl reboot exited with status 1") ||
		out.Output != "output of /fake/systemctl" {
		t.Fatalf("failed reboot %+v", out)
	}
	e.clock.advance(59 * time.Minute)
	restarted := e.rebooter(t)
	for _, check := range []bool{true, false} {
		out = restarted.Reboot(context.Background(), e.rb, e.child, Request{ID: "rb2", CheckOnly: check})
		if out.Allowed || !strings.Contains(out.Reason, "the last host reboot (rb1) was started at 2026-11-25T21:00:00Z, 59m0s ago; the policy allows one every 1h0m0s (min_interval)") {
			t.Errorf("check %v: %+v", check, out)
		}
	}
	if out := restarted.Reboot(context.Background(), e.rb, e.child, Request{ID: "rb3", VMID: "105"}); !out.Started {
		t.Errorf("container reboot held back by the host guard: %+v", out)
	}
	e.clock.advance(time.Minute)
	if out := restarted.Reboot(context.Background(), e.rb, e.child, Request{ID: "rb4", CheckOnly: true}); !out.Allowed {
		t.Errorf("after min_interval: %+v", out)
	}
	if got := len(e.launch.commands()); got != 4 {
		t.Errorf("%d runs: check-only and refusals must run nothing", got)
	}
}

func TestBootGuard(t *testing.T) {
	e := newEnv(t)
	e.uptime = 9*time.Minute + 30*time.Second
	out := e.rebooter(t).Reboot(context.Background(), e.rb, e.child, Request{ID: "rb1"})
	if out.Allowed || !strings.Contains(out.Reason, "the host has been up only 9m30s; the policy allows a host reboot once it has been up 10m0s (min_uptime)") {
		t.Errorf("%+v", out)
	}
	if _, err := os.Stat(filepath.Join(e.dir, RecordName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused reboot was recorded: %v", err)
	}
	if out := e.rebooter(t).Reboot(context.Background(), e.rb, e.child, Request{ID: "rb2", VMID: "105"}); !out.Started {
		t.Errorf("container reboot held back by the boot guard: %+v", out)
	}
}

func TestPatchRunningRefusesReboots(t *testing.T) {
	e := newEnv(t)
	e.patches.running = true
	for _, vmid := range []string{"", "105"} {
		out := e.rebooter(t).Reboot(context.Background(), e.rb, e.child, Request{ID: "rb1", VMID: vmid})
		if out.Allowed || !strings.Contains(out.Reason, "a patch run is in progress") {
			t.Errorf("vmid %q: %+v", vmid, out)
		}
	}
	if n := len(e.launch.commands()); n != 0 {
		t.Errorf("%d commands ran", n)
	}
}

// One reboot at a time; the command is not cut short when the caller
// goes away.
func TestOneRebootAtATime(t *testing.T) {
	e := newEnv(t)
	e.launch.block = make(chan struct{})
	r := e.rebooter(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Outcome, 1)
	go func() { done <- r.Reboot(ctx, e.rb, e.child, Request{ID: "rb1", VMID: "105"}) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.launch.commands()) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	out := r.Reboot(context.Background(), e.rb, e.child, Request{ID: "rb2", VMID: "106", CheckOnly: true})
	if out.Allowed || !strings.Contains(out.Reason, "another reboot (rb1) is in progress") {
		t.Errorf("second reboot: %+v", out)
	}
	e.launch.mu.Lock()
	cmdCtx := e.launch.ctxs[1]
	e.launch.mu.Unlock()
	if cmdCtx.Err() != nil {
		t.Error("the reboot command's context ended with the caller's")
	}
	close(e.launch.block)
	if got := <-done; !got.Started {
		t.Errorf("first reboot %+v", got)
	}
	if out := r.Reboot(context.Background(), e.rb, e.child, Request{ID: "rb3", VMID: "106", CheckOnly: true}); !out.Allowed {
		t.Errorf("after the first finished: %+v", out)
	}
}

func TestUntrustedStateRefusesHostReboots(t *testing.T) {
	tests := map[string]func(t *testing.T, e *env){
		"corrupt record": func(t *testing.T, e *env) {
			if err := os.WriteFile(filepath.Join(e.dir, RecordName), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"record in the future": func(t *testing.T, e *env) {
			if err := e.rebooter(t).state.write(Record{At: e.clock.Now().Add(time.Hour), RebootID: "rb0"}); err != nil {
				t.Fatal(err)
			}
		},
		"directory open to others": func(t *testing.T, e *env) {
			if err := os.Chmod(e.dir, 0o755); err != nil {
				t.Fatal(err)
			}
		},
		"record is a symlink": func(t *testing.T, e *env) {
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			if err := os.WriteFile(target, []byte(`{"version":1,"at":"2000-01-01T00:00:00Z","reboot_id":"x"}`), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(e.dir, RecordName)); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, spoil := range tests {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.rebooter(t) // creates the directory
			spoil(t, e)
			out := e.rebooter2(t).Reboot(context.Background(), e.rb, e.child, Request{ID: "rb1"})
			if out.Allowed || !(strings.Contains(out.Reason, "cannot be trusted") || strings.Contains(out.Reason, "in the future")) {
				t.Errorf("%+v", out)
			}
			if n := len(e.launch.commands()); n != 0 {
				t.Errorf("%d commands ran", n)
			}
		})
	}
}

// rebooter2 builds a Rebooter without insisting on a sound state directory.
func (e *env) rebooter2(t *testing.T) *Rebooter {
	r, err := New(Config{StateDir: e.dir, Patches: e.patches, Launcher: e.launch, Now: e.clock.Now,
		Uptime: func() (time.Duration, error) { return e.uptime, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLauncherFailureAndBadRequests(t *testing.T) {
	e := newEnv(t)
	e.launch.err = execute.ErrInvalid
	out := e.rebooter(t).Reboot(context.Background(), e.rb, e.child, Request{ID: "rb1", VMID: "105"})
	if !out.Allowed || out.Started || out.ExitCode != -1 || out.Warned || !strings.Contains(out.Reason, "/fake/pct did not start") {
		t.Errorf("%+v", out)
	}
	e.launch.err, e.launch.timeout = nil, true
	out = e.rebooter(t).Reboot(context.Background(), e.rb, e.child, Request{ID: "rb2", VMID: "105"})
	if !out.Allowed || out.Started || out.ExitCode != -1 || out.Output != "hung" ||
		out.Reason != "/fake/pct reboot 105 did not finish within 1m0s and was killed" {
		t.Errorf("timed out: %+v", out)
	}
	for _, id := range []string{"", "../x", strings.Repeat("a", 65)} {
		if out := e.rebooter(t).Reboot(context.Background(), e.rb, e.child, Request{ID: id, VMID: "105"}); out.Allowed {
			t.Errorf("id %q allowed", id)
		}
	}
}

func TestCommand(t *testing.T) {
	rb := policy.Reboots{Systemctl: "/usr/bin/systemctl", Pct: "/usr/sbin/pct"}
	if got := strings.Join(Command(rb, ""), " "); got != "/usr/bin/systemctl reboot" {
		t.Error(got)
	}
	if got := strings.Join(Command(rb, "105"), " "); got != "/usr/sbin/pct reboot 105" {
		t.Error(got)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"version":1,"at":"2026-11-25T21:00:00Z","reboot_id":"rb1"}`))
	f.Add([]byte(`{"version":2,"at":"2026-11-25T21:00:00Z","reboot_id":"rb1"}`))
	f.Add([]byte(`{"version":1,"at":"2026-11-25T21:00:00Z","reboot_id":"rb1","x":1}`))
	f.Add([]byte(`{"version":1}{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRecord(data)
		if err == nil && (r.At.IsZero() || !ValidID(r.RebootID)) {
			t.Fatalf("accepted %+v", r)
		}
	})
}
