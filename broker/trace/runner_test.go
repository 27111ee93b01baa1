package trace

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// fakeRunner returns a Runner whose bpftrace is the test binary acting as
// fake-bpftrace in the given mode, with short timers.
func fakeRunner(t *testing.T, mode string, tweak func(*Config)) *Runner {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	link := filepath.Join(dir, "fake-bpftrace")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mode"), []byte(mode), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		BpftracePath:   link,
		AllowedKinds:   []string{KindTracepoint, KindSyscall},
		AllowedTargets: []string{"syscalls:*", "sched:*"},
		StartTimeout:   5 * time.Second,
		ExitGrace:      5 * time.Second,
		KillGrace:      2 * time.Second,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := NewRunner(cfg, testLauncher(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func countSpec(target string, d time.Duration) *brokerv1.TraceSpec {
	return &brokerv1.TraceSpec{
		Kind:     brokerv1.TraceKind_TRACE_KIND_TRACEPOINT,
		Target:   target,
		Duration: durationpb.New(d),
	}
}

func mustRun(t *testing.T, r *Runner, spec *brokerv1.TraceSpec) *brokerv1.RunTraceResponse {
	t.Helper()
	resp, err := r.Run(context.Background(), spec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return resp
}

func TestRunArgvAndEnvironment(t *testing.T) {
	r := fakeRunner(t, "argv", nil)
	resp := mustRun(t, r, countSpec("syscalls:sys_enter_openat", 200*time.Millisecond))
	if !resp.Ok {
		t.Fatalf("not ok: %s", resp.Error)
	}
	if len(resp.Samples) < 2 {
		t.Fatalf("samples = %q", resp.Samples)
	}
	argv := strings.Split(resp.Samples[0], "\x00")
	// The sample lost the program's last newline.
	want := []string{"-f", "json", "-e", strings.TrimSuffix(resp.Program, "\n")}
	if !slices.Equal(argv, want) {
		t.Errorf("argv = %q, want %q", argv, want)
	}
	for _, a := range argv[:3] {
		if a == "--unsafe" || a == "-c" || a == "-p" {
			t.Errorf("forbidden flag %q in argv", a)
		}
	}
	env := strings.Split(resp.Samples[1], "\x00")
	if !slices.Equal(env, traceEnv) {
		t.Errorf("env = %q, want exactly %q", env, traceEnv)
	}
	if resp.Events != 3 || resp.AttachedProbes != 2 {
		t.Errorf("events = %d, attached = %d; want 3, 2", resp.Events, resp.AttachedProbes)
	}
}

func TestRunOutcomes(t *testing.T) {
	tests := []struct {
		mode      string
		ok        bool
		overran   bool
		errHas    string
		errHasNot string
		events    int64
	}{
		{mode: "overrun", ok: true, overran: true, events: 7},
		{mode: "hang", overran: true, errHas: "was killed"},
		{mode: "noattach", errHas: "did not attach its probes within 500ms"},
		{mode: "fail", errHas: "tracepoint not found: nope:nope", errHasNot: "RLIMIT_MEMLOCK"},
		{mode: "silent-exit", errHas: "exited without attaching any probe"},
		{mode: "self-kill", errHas: "bpftrace was killed by SIGTERM"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			r := fakeRunner(t, tt.mode, func(c *Config) {
				// Only noattach waits the start timeout out; the others
				// attach as soon as the fake starts, which takes longer
				// than 500ms on a loaded machine with -race.
				c.StartTimeout = 10 * time.Second
				if tt.mode == "noattach" {
					c.StartTimeout = 500 * time.Millisecond
				}
				c.ExitGrace = 200 * time.Millisecond
				c.KillGrace = 300 * time.Millisecond
			})
			resp := mustRun(t, r, countSpec("syscalls:sys_enter_openat", 200*time.Millisecond))
			if resp.Ok != tt.ok {
				t.Fatalf("ok = %v, want %v (error %q)", resp.Ok, tt.ok, resp.Error)
			}
			if resp.Overran != tt.overran {
				t.Errorf("overran = %v, want %v", resp.Overran, tt.overran)
			}
			if !strings.Contains(resp.Error, tt.errHas) {
				t.Errorf("error %q does not contain %q", resp.Error, tt.errHas)
			}
			if tt.errHasNot != "" && strings.Contains(resp.Error, tt.errHasNot) {
				t.Errorf("error %q contains %q", resp.Error, tt.errHasNot)
			}
			if resp.Events != tt.events {
				t.Errorf("events = %d, want %d", resp.Events, tt.events)
			}
			if resp.Refused {
				t.Error("a run that started is marked refused")
			}
		})
	}
}

func TestRunFailureKeepsStderrAsWarnings(t *testing.T) {
	r := fakeRunner(t, "fail", nil)
	resp := mustRun(t, r, countSpec("syscalls:sys_enter_openat", 200*time.Millisecond))
	if resp.ExitCode != 1 {
		t.Errorf("exit code = %d, want 1", resp.ExitCode)
	}
	joined := strings.Join(resp.Warnings, "\n")
	for _, want := range []string{"RLIMIT_MEMLOCK", "tracepoint not found"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q: %q", want, resp.Warnings)
		}
	}
	if strings.Contains(resp.Error, "~~~") || strings.Contains(resp.Error, "{") {
		t.Errorf("error carries the program echo: %q", resp.Error)
	}
}

func TestRunFloodStaysBounded(t *testing.T) {
	r := fakeRunner(t, "flood", func(c *Config) {
		c.OutputCap = 16 << 10
		c.SampleLimit = 10
		c.MapEntryLimit = 15
	})
	resp := mustRun(t, r, countSpec("syscalls:sys_enter_openat", 200*time.Millisecond))
	if !resp.Ok {
		t.Fatalf("not ok: %s", resp.Error)
	}
	size := proto.Size(resp)
	t.Logf("flood: %d output bytes -> %d response bytes", resp.OutputBytes, size)
	if size > 16<<10 {
		t.Errorf("response is %d bytes, cap 16 KiB", size)
	}
	if resp.OutputBytes < 3<<20 {
		t.Errorf("output bytes = %d, want the whole flood counted", resp.OutputBytes)
	}
	if !resp.Truncated {
		t.Error("a skipped 3 MiB line must mark the response truncated")
	}
	if len(resp.Samples) > 10 || resp.SamplesDropped < 20000-10 {
		t.Errorf("samples kept %d, dropped %d", len(resp.Samples), resp.SamplesDropped)
	}
	if resp.Events != 20001 || resp.LostEvents != 12 {
		t.Errorf("events = %d lost = %d, want 20001 and 12", resp.Events, resp.LostEvents)
	}
	m := findMap(resp, "@by_process")
	if m == nil || len(m.Entries) == 0 || len(m.Entries) > 15 {
		t.Fatalf("@by_process = %v", m)
	}
	if m.Entries[0].Key != "5999,proc-4999" || m.Entries[0].Value != 4999 {
		t.Errorf("top entry = %v, want the largest value first", m.Entries[0])
	}
	if int64(len(m.Entries))+m.Dropped != 5000 {
		t.Errorf("kept %d + dropped %d != 5000 keys", len(m.Entries), m.Dropped)
	}
}

func TestRunRefusesBeyondConcurrencyAndCancels(t *testing.T) {
	r := fakeRunner(t, "overrun", func(c *Config) { c.MaxConcurrent = 1; c.ExitGrace = 10 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var first *brokerv1.RunTraceResponse
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		first, _ = r.Run(ctx, countSpec("syscalls:sys_enter_openat", 5*time.Second))
	}()
	ready := filepath.Join(filepath.Dir(r.cfg.BpftracePath), "ready")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	second := mustRun(t, r, countSpec("syscalls:sys_enter_openat", time.Second))
	if !second.Refused || !strings.Contains(second.Error, "too many traces running (limit 1)") {
		t.Errorf("second trace: refused=%v error=%q", second.Refused, second.Error)
	}
	cancel()
	wg.Wait()
	if first == nil || first.Ok || !strings.Contains(first.Error, "trace cancelled") {
		t.Fatalf("first trace after cancel: %v", first)
	}
	// SIGINT made the fake print its map: evidence survives a cancel.
	if first.Events != 7 {
		t.Errorf("events after cancel = %d, want 7", first.Events)
	}
	third := mustRun(t, fakeRunner(t, "argv", nil), countSpec("syscalls:sys_enter_openat", 100*time.Millisecond))
	if !third.Ok {
		t.Errorf("a new trace after the slot freed: %s", third.Error)
	}
	if r.cfg.Slots.InUse() != 0 {
		t.Error("slot not released")
	}
}

func TestRunRefusesBeforeStarting(t *testing.T) {
	r := fakeRunner(t, "argv", nil)
	tests := []struct {
		name string
		spec *brokerv1.TraceSpec
		want string
	}{
		{"nil spec", nil, "no trace spec"},
		{"bad target", countSpec("syscalls:sys_enter_open at", time.Second), "not allowed"},
		{"not in policy", countSpec("block:block_rq_issue", time.Second), "not allowed by the policy's trace targets"},
		{"kprobe kind", &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_KPROBE, Target: "vfs_read"}, `trace kind "kprobe" is not allowed`},
		{"raw", &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: "BEGIN { exit(); }"}, "raw bpftrace programs are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := mustRun(t, r, tt.spec)
			if !resp.Refused || resp.Ok || !strings.Contains(resp.Error, tt.want) {
				t.Errorf("refused=%v ok=%v error=%q, want refusal containing %q", resp.Refused, resp.Ok, resp.Error, tt.want)
			}
			if resp.Program != "" {
				t.Errorf("a refused spec carries a program: %q", resp.Program)
			}
		})
	}
}

func TestRunCancelledContext(t *testing.T) {
	r := fakeRunner(t, "argv", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Run(ctx, countSpec("syscalls:sys_enter_openat", time.Second)); err == nil {
		t.Error("Run with a done context returned no error")
	}
}

func TestNewRunnerRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{BpftracePath: "bpftrace"},
		{AllowedKinds: []string{"uprobe"}},
		{AllowedKinds: []string{"raw"}},
		{AllowedTargets: []string{"sched:["}},
	} {
		if _, err := NewRunner(cfg, testLauncher(t), nil); err == nil {
			t.Errorf("NewRunner(%+v) accepted a bad config", cfg)
		}
	}
}

func findMap(resp *brokerv1.RunTraceResponse, name string) *brokerv1.TraceMap {
	for _, m := range resp.Maps {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// TestBpftraceGoesThroughTheLauncher: bpftrace runs in a run cgroup of
// its own, with no_new_privs, and its memory is capped: a bpftrace that
// outgrows child_memory is killed and the trace says why.
func TestBpftraceGoesThroughTheLauncher(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: run cgroups")
	}
	r := fakeRunner(t, "containment", nil)
	resp := mustRun(t, r, countSpec("syscalls:sys_enter_openat", 100*time.Millisecond))
	if !resp.Ok || len(resp.Samples) < 2 {
		t.Fatalf("not ok: %v", resp)
	}
	if !strings.Contains(resp.Samples[0], "/nannyagent-exec/run-") {
		t.Errorf("bpftrace is not in a run cgroup:\n%s", resp.Samples[0])
	}
	if !strings.Contains(resp.Samples[1], "NoNewPrivs:\t1") {
		t.Errorf("bpftrace runs without no_new_privs")
	}
	hog := fakeRunner(t, "memhog", func(c *Config) { c.ChildMemory = 64 << 20 })
	resp = mustRun(t, hog, countSpec("syscalls:sys_enter_openat", 5*time.Second))
	if resp.Ok || !strings.Contains(resp.Error, "memory limit") || resp.Events != 0 {
		t.Errorf("a bpftrace over its memory cap: ok %v error %q events %d", resp.Ok, resp.Error, resp.Events)
	}
}
