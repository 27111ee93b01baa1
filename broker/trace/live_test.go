package trace

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

const bpftracePath = "/usr/bin/bpftrace"

// needBpftrace skips, with the reason, where a real trace cannot run.
func needBpftrace(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: bpftrace loads BPF programs")
	}
	if _, err := os.Stat(bpftracePath); err != nil {
		t.Skipf("needs bpftrace at %s: %v", bpftracePath, err)
	}
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		t.Skipf("needs tracefs at /sys/kernel/tracing: %v", err)
	}
}

func liveRunner(t testing.TB, tweak func(*Config)) *Runner {
	t.Helper()
	needBpftrace(t)
	cfg := Config{
		BpftracePath:   bpftracePath,
		AllowedKinds:   []string{KindTracepoint, KindSyscall, KindKprobe, KindKretprobe},
		AllowedTargets: []string{"syscalls:*", "sched:*", "raw_syscalls:*", "kprobe:*", "kretprobe:*"},
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

// helper starts the test binary under the name role (its comm) with args;
// it runs until the returned stop func closes its stdin.
func helper(t testing.TB, role string, args ...string) (*exec.Cmd, func()) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), role)
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			stdin.Close()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	return cmd, stop
}

func TestLiveOpenatFilteredToOneProcess(t *testing.T) {
	t.Parallel()
	r := liveRunner(t, func(c *Config) { c.MapEntryLimit = 50 })
	dirA, dirB := t.TempDir(), t.TempDir()
	a, _ := helper(t, "tr-open-a", dirA)
	b, _ := helper(t, "tr-open-b", dirB)
	pidA := int32(a.Process.Pid)
	resp := mustRun(t, r, &brokerv1.TraceSpec{
		Kind:     brokerv1.TraceKind_TRACE_KIND_TRACEPOINT,
		Target:   "syscalls:sys_enter_openat",
		Filter:   &brokerv1.TraceFilter{Pid: &pidA},
		Duration: durationpb.New(2 * time.Second),
	})
	if !resp.Ok {
		t.Fatalf("trace failed: %s\nwarnings: %q", resp.Error, resp.Warnings)
	}
	if !strings.Contains(resp.Program, fmt.Sprintf("/pid == %d && comm != \"bpftrace\"/", pidA)) {
		t.Errorf("program lacks the pid predicate:\n%s", resp.Program)
	}
	if resp.Events < 50 {
		t.Fatalf("events = %d, want the helper's opens (one every 2 ms for 2 s)", resp.Events)
	}
	procs := findMap(resp, "@by_process")
	if procs == nil || len(procs.Entries) == 0 {
		t.Fatalf("no @by_process map: %v", resp.Maps)
	}
	for _, e := range procs.Entries {
		if e.Key != fmt.Sprintf("%d,tr-open-a", pidA) {
			t.Errorf("@by_process has key %q; only pid %d (tr-open-a) was traced", e.Key, pidA)
		}
	}
	paths := findMap(resp, "@by_path")
	if paths == nil {
		t.Fatal("no @by_path map")
	}
	sawA := 0
	for _, e := range paths.Entries {
		if strings.HasPrefix(e.Key, dirB) || strings.Contains(e.Key, "tr-open-b") {
			t.Errorf("path %q of the unfiltered process %d was traced", e.Key, b.Process.Pid)
		}
		if strings.HasPrefix(e.Key, filepath.Join(dirA, "tr-open-a-")) {
			sawA++
		}
	}
	if sawA < 10 {
		t.Errorf("only %d of tr-open-a's distinct paths in @by_path: %v", sawA, paths.Entries)
	}
	if len(resp.Samples) == 0 {
		t.Fatal("no sampled events")
	}
	for _, s := range resp.Samples {
		if !strings.Contains(s, fmt.Sprintf("pid=%d ", pidA)) || !strings.Contains(s, "comm=tr-open-a") {
			t.Errorf("sample %q is not from the filtered process", s)
		}
	}
	if resp.SamplesDropped != 0 {
		t.Errorf("samples dropped = %d: the kernel-side guard should print only %d", resp.SamplesDropped, r.cfg.SampleLimit)
	}
}

func TestLiveExecCaught(t *testing.T) {
	t.Parallel()
	r := liveRunner(t, nil)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(t.TempDir(), "tr-exec-probe")
	if err := os.Symlink(exe, probe); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// Exec until the trace is over: the trace attaches after a compile
		// whose length is not known in advance.
		defer wg.Done()
		for ctx.Err() == nil {
			_ = exec.Command(probe).Run()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	resp := mustRun(t, r, &brokerv1.TraceSpec{
		Kind:     brokerv1.TraceKind_TRACE_KIND_TRACEPOINT,
		Target:   "sched:sched_process_exec",
		Filter:   &brokerv1.TraceFilter{Comm: "tr-exec-probe"},
		Duration: durationpb.New(2 * time.Second),
	})
	cancel()
	wg.Wait()
	if !resp.Ok {
		t.Fatalf("trace failed: %s", resp.Error)
	}
	if resp.Events < 1 {
		t.Fatalf("no exec caught: %v", resp)
	}
	paths := findMap(resp, "@by_path")
	if paths == nil || len(paths.Entries) != 1 || paths.Entries[0].Key != probe {
		t.Errorf("@by_path = %v, want only %s", paths, probe)
	}
	if len(resp.Samples) == 0 || !strings.Contains(resp.Samples[0], "comm=tr-exec-probe path="+probe) {
		t.Errorf("samples = %q", resp.Samples)
	}
}

func TestLiveReadLatencyHistogram(t *testing.T) {
	t.Parallel()
	r := liveRunner(t, nil)
	rd, _ := helper(t, "tr-read")
	pid := int32(rd.Process.Pid)
	resp := mustRun(t, r, &brokerv1.TraceSpec{
		Kind:     brokerv1.TraceKind_TRACE_KIND_SYSCALL,
		Target:   "read",
		Measure:  brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY,
		Filter:   &brokerv1.TraceFilter{Pid: &pid},
		Duration: durationpb.New(2 * time.Second),
	})
	if !resp.Ok {
		t.Fatalf("trace failed: %s\n%s", resp.Error, resp.Program)
	}
	if resp.AttachedProbes < 2 {
		t.Errorf("attached probes = %d, want sys_enter_read and sys_exit_read", resp.AttachedProbes)
	}
	lat := findMap(resp, "@latency_us")
	if lat == nil || len(lat.Histograms) != 1 {
		t.Fatalf("no @latency_us histogram: %v", resp.Maps)
	}
	var total uint64
	nonEmpty := 0
	for _, b := range lat.Histograms[0].Buckets {
		total += b.Count
		if b.Count > 0 {
			nonEmpty++
		}
		if b.Min != nil && b.Max != nil && *b.Min > *b.Max {
			t.Errorf("bucket [%d, %d] is inverted", *b.Min, *b.Max)
		}
	}
	if resp.Events < 100 || total != uint64(resp.Events) {
		t.Errorf("histogram total %d, events %d: want equal and > 100", total, resp.Events)
	}
	if nonEmpty < 2 {
		t.Errorf("all reads in %d bucket(s): %v", nonEmpty, lat.Histograms[0].Buckets)
	}
	stats := findMap(resp, "@latency_us_stats")
	if stats == nil || len(stats.Stats) != 1 || stats.Stats[0].Count != resp.Events {
		t.Errorf("@latency_us_stats = %v, want count %d", stats, resp.Events)
	}
	for _, e := range findMap(resp, "@by_process").GetEntries() {
		if !strings.HasPrefix(e.Key, fmt.Sprintf("%d,", pid)) {
			t.Errorf("@by_process key %q is not the filtered pid %d", e.Key, pid)
		}
	}
}

func TestLiveBadTracepoint(t *testing.T) {
	t.Parallel()
	r := liveRunner(t, nil)
	resp := mustRun(t, r, countSpec("syscalls:sys_enter_nope", time.Second))
	if resp.Ok || resp.Refused {
		t.Fatalf("ok=%v refused=%v: an unknown tracepoint must fail in bpftrace", resp.Ok, resp.Refused)
	}
	if !strings.Contains(resp.Error, "tracepoint not found: syscalls:sys_enter_nope") {
		t.Errorf("error %q lacks bpftrace's words", resp.Error)
	}
	if strings.Contains(resp.Error, "RLIMIT_MEMLOCK") {
		t.Errorf("error carries the RLIMIT_MEMLOCK notice: %q", resp.Error)
	}
	if resp.ExitCode != 1 || resp.Events != 0 {
		t.Errorf("exit code %d events %d", resp.ExitCode, resp.Events)
	}
}

func TestLiveKprobeAbsent(t *testing.T) {
	t.Parallel()
	needBpftrace(t)
	if _, err := os.Stat("/sys/kernel/tracing/kprobe_events"); err == nil {
		t.Skip("this kernel has kprobes: the failure path needs one without kprobe_events")
	}
	spec := &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_KPROBE, Target: "vfs_read", Duration: durationpb.New(time.Second)}

	// The Probe says kprobes are unavailable: refused before running.
	refusing := liveRunner(t, nil)
	resp := mustRun(t, refusing, spec)
	if !resp.Refused || !strings.Contains(resp.Error, "kprobes are not available") {
		t.Errorf("refused=%v error=%q", resp.Refused, resp.Error)
	}

	// A config that claims kprobes: bpftrace itself is asked and says no.
	claiming := liveRunner(t, func(c *Config) { c.KprobesAvailable = true })
	for _, kind := range []brokerv1.TraceKind{brokerv1.TraceKind_TRACE_KIND_KPROBE, brokerv1.TraceKind_TRACE_KIND_KRETPROBE} {
		s := proto.Clone(spec).(*brokerv1.TraceSpec)
		s.Kind = kind
		resp := mustRun(t, claiming, s)
		if resp.Ok || resp.Refused {
			t.Fatalf("%s: ok=%v refused=%v, want bpftrace's failure", kind, resp.Ok, resp.Refused)
		}
		if !strings.Contains(resp.Error, "Error attaching probe") || !strings.Contains(resp.Error, "kprobe_events") {
			t.Errorf("%s: error %q lacks bpftrace's words", kind, resp.Error)
		}
	}
}

// heapPeak samples the heap in use until stop is closed.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// load makes syscalls on one CPU until stop is closed; the other is left to
// bpftrace, whose exit must not starve.
func load(stop <-chan struct{}) (*sync.WaitGroup, *atomic.Int64) {
	var wg sync.WaitGroup
	var n atomic.Int64
	for i := 0; i < 1; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for j := 0; j < 1000; j++ {
					syscall.Getppid()
				}
				n.Add(1000)
			}
		}()
	}
	return &wg, &n
}

// The two busy tests share the heap they measure, so they run one at a time.
var busyMu sync.Mutex

func TestLiveBusyTraceStaysBounded(t *testing.T) {
	const outputCap = 32 << 10
	r := liveRunner(t, func(c *Config) { c.OutputCap = outputCap })
	busyMu.Lock()
	defer busyMu.Unlock()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	peak := heapPeak(stop)
	wg, calls := load(stop)
	resp := mustRun(t, r, &brokerv1.TraceSpec{
		Kind:     brokerv1.TraceKind_TRACE_KIND_TRACEPOINT,
		Target:   "raw_syscalls:sys_enter",
		Duration: durationpb.New(10 * time.Second),
	})
	close(stop)
	wg.Wait()
	p := <-peak
	size := proto.Size(resp)
	t.Logf("busy: %d syscalls made, %d events traced, %d lost, %d output bytes read, response %d bytes, heap in use %d KiB before, peak %d KiB",
		calls.Load(), resp.Events, resp.LostEvents, resp.OutputBytes, size, before.HeapInuse>>10, p>>10)
	if !resp.Ok {
		t.Fatalf("trace failed: %s", resp.Error)
	}
	self := fmt.Sprintf("%d,%s", os.Getpid(), comm(t))
	var mine int64
	for _, e := range findMap(resp, "@by_process").GetEntries() {
		if e.Key == self {
			mine = e.Value
		}
	}
	if mine < 10000 || resp.Events < mine {
		t.Errorf("@by_process[%s] = %d of %d events; the load made %d syscalls", self, mine, resp.Events, calls.Load())
	}
	if size > outputCap {
		t.Errorf("response %d bytes exceeds the %d cap", size, outputCap)
	}
	for _, m := range resp.Maps {
		if n := len(m.Entries) + len(m.Histograms) + len(m.Stats); n > r.cfg.MapEntryLimit {
			t.Errorf("map %s keeps %d keys, limit %d", m.Name, n, r.cfg.MapEntryLimit)
		}
	}
	if len(resp.Samples) > r.cfg.SampleLimit {
		t.Errorf("%d samples kept, limit %d", len(resp.Samples), r.cfg.SampleLimit)
	}
	const heapBound = 64 << 20
	if p > before.HeapInuse+heapBound {
		t.Errorf("heap peaked at %d KiB, more than %d KiB over the start", p>>10, heapBound>>10)
	}
}

func TestLiveRawFloodStaysBounded(t *testing.T) {
	const outputCap = 32 << 10
	r := liveRunner(t, func(c *Config) {
		c.OutputCap = outputCap
		c.AllowRaw = true
		c.ExitGrace = 3 * time.Second
	})
	busyMu.Lock()
	defer busyMu.Unlock()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	peak := heapPeak(stop)
	wg, _ := load(stop)
	// Every syscall printed: far more output than any result may hold. The
	// program has no exit of its own: the broker appends one.
	resp := mustRun(t, r, &brokerv1.TraceSpec{
		Kind:     brokerv1.TraceKind_TRACE_KIND_RAW,
		Program:  `tracepoint:raw_syscalls:sys_enter /comm != "bpftrace"/ { @[comm] = count(); printf("%d %s %d\n", pid, comm, args->id); }`,
		Duration: durationpb.New(3 * time.Second),
	})
	close(stop)
	wg.Wait()
	p := <-peak
	size := proto.Size(resp)
	t.Logf("raw flood: %d printf events, %d lost, %d output bytes read, response %d bytes, heap in use %d KiB before, peak %d KiB",
		resp.Events, resp.LostEvents, resp.OutputBytes, size, before.HeapInuse>>10, p>>10)
	if resp.Refused || resp.AttachedProbes == 0 {
		t.Fatalf("trace did not run: %s", resp.Error)
	}
	if !hasWarning(resp, "raw program written by the caller") {
		t.Errorf("no raw-program warning: %q", resp.Warnings)
	}
	if size > outputCap {
		t.Errorf("response %d bytes exceeds the %d cap", size, outputCap)
	}
	if resp.OutputBytes < int64(10*size) {
		t.Errorf("output %d bytes is not much larger than the response: the test did not flood", resp.OutputBytes)
	}
	if int64(len(resp.Samples))+resp.SamplesDropped != resp.Events {
		t.Errorf("samples %d + dropped %d != printf events %d", len(resp.Samples), resp.SamplesDropped, resp.Events)
	}
	// Under a flood bpftrace 0.17 can lose its exit event in the full ring
	// buffer; then the broker interrupts it, and the maps may be lost. The
	// bounds must hold either way.
	if findMap(resp, "@") == nil {
		t.Logf("no map printed (overran=%v): %q", resp.Overran, resp.Warnings)
	}
	const heapBound = 64 << 20
	if p > before.HeapInuse+heapBound {
		t.Errorf("heap peaked at %d KiB, more than %d KiB over the start", p>>10, heapBound>>10)
	}
}

func hasWarning(resp *brokerv1.RunTraceResponse, sub string) bool {
	for _, w := range resp.Warnings {
		if strings.Contains(w, sub) {
			return true
		}
	}
	return false
}

// comm is this process's command name as the kernel keeps it.
func comm(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
