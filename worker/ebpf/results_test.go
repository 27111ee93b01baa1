package ebpf

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

func i64(v int64) *int64 { return &v }

// okResponse is what the broker returned for an openat trace on this host.
func okResponse() *brokerv1.RunTraceResponse {
	return &brokerv1.RunTraceResponse{
		Ok:             true,
		AttachedProbes: 3,
		Events:         400,
		Duration:       durationpb.New(2 * time.Second),
		Warnings:       []string{`ERROR: Unknown error -1: couldn't set RLIMIT_MEMLOCK for bpftrace. If your program is not loading, you can try "ulimit -l 8192" to fix the problem`},
		Maps: []*brokerv1.TraceMap{
			{Name: "@by_process", Entries: []*brokerv1.TraceMapEntry{{Key: "4242,tr-open-a", Value: 390}, {Key: "4243,sh", Value: 10}}, Dropped: 3},
			{Name: "@latency_us", Histograms: []*brokerv1.TraceHistogram{{Buckets: []*brokerv1.HistogramBucket{
				{Max: i64(-1), Count: 0}, {Min: i64(0), Max: i64(0), Count: 5}, {Min: i64(1), Max: i64(1), Count: 0}, {Min: i64(1024), Count: 2},
			}}}},
			{Name: "@latency_us_stats", Stats: []*brokerv1.TraceStats{{Count: 400, Average: 12, Total: 4800}}},
			{Name: "@total", Value: i64(77)},
		},
		Samples:        []string{"pid=4242 uid=0 comm=tr-open-a path=/tmp/x"},
		SamplesDropped: 19,
	}
}

func TestResultsShapes(t *testing.T) {
	programs := []Program{
		{Name: "opens", Type: "syscall", Target: "openat", Description: "latency of opens", Filters: json.RawMessage(`{"pid":4242,"tid":1}`)},
		{Type: "tracepoint", Target: "syscalls:sys_enter_nope"},
		{Type: "kprobe", Target: "vfs_read"},
		{Type: "uprobe", Target: "/bin/bash:readline"},
		{Type: "tracepoint", Target: "sched:sched_switch"},
	}
	traces := make([]Trace, len(programs))
	for i, p := range programs {
		traces[i].Conversion = Convert(p)
	}
	traces[0].Response = okResponse()
	traces[1].Response = &brokerv1.RunTraceResponse{
		Error:    "stdin:1:1-35: ERROR: tracepoint not found: syscalls:sys_enter_nope",
		ExitCode: 1,
		Warnings: []string{"ERROR: Unknown error -1: couldn't set RLIMIT_MEMLOCK for bpftrace.", "stdin:1:1-35: ERROR: tracepoint not found: syscalls:sys_enter_nope"},
	}
	traces[2].Response = &brokerv1.RunTraceResponse{Refused: true, Error: "kprobes are not available on this kernel (tracefs has no kprobe_events); trace a tracepoint or a syscall instead"}
	traces[4].Err = errors.New("rpc error: code = Unavailable desc = broker gone")

	turn := Results(traces)
	if turn.Executed != 2 {
		t.Errorf("executed = %d, want 2 (the refused, unconvertible and unsent ones did not run)", turn.Executed)
	}
	ok := turn.Results[0]
	if !ok.Success || ok.EventCount != 400 || ok.EventsPerSecond != 200 || ok.Duration != 2 || ok.Index != 0 || ok.Target != "openat" {
		t.Errorf("success result = %+v", ok)
	}
	if ok.Kind != "syscall" || ok.Measure != "latency" || ok.Filter != "pid=4242" || ok.Probe != "tracepoint:syscalls:sys_enter_openat and sys_exit_openat" {
		t.Errorf("describing fields = %q %q %q %q", ok.Kind, ok.Measure, ok.Filter, ok.Probe)
	}
	if len(ok.Ignored) != 1 || !strings.Contains(ok.Ignored[0], "filters.tid") {
		t.Errorf("ignored = %q", ok.Ignored)
	}
	if len(ok.Warnings) != 0 {
		t.Errorf("the RLIMIT_MEMLOCK notice of a successful run reached the model: %q", ok.Warnings)
	}
	for _, want := range []string{"top process 4242,tr-open-a (390 events)", "average latency 12 µs over 400 calls", "400 events (200.00/s)"} {
		if !strings.Contains(ok.Summary, want) {
			t.Errorf("summary %q lacks %q", ok.Summary, want)
		}
	}
	for _, want := range []string{"@by_process (largest shown, 3 more keys):\n  4242,tr-open-a = 390", "    [0, 0] 5\n    [1024, …) 2", "@total: 77", "(all) count 400 average 12 total 4800", "first 1 events (19 more not shown):\n  pid=4242"} {
		if !strings.Contains(ok.Output, want) {
			t.Errorf("output lacks %q:\n%s", want, ok.Output)
		}
	}
	if h := ok.Aggregates[1].Histograms[0].Buckets; len(h) != 2 {
		t.Errorf("empty buckets kept: %v", h)
	}

	failed := turn.Results[1]
	if failed.Success || !strings.Contains(failed.Error, "tracepoint not found: syscalls:sys_enter_nope") || failed.Summary != failed.Error {
		t.Errorf("failed result = %+v", failed)
	}
	if len(failed.Warnings) != 2 {
		t.Errorf("a failed run keeps all its warnings: %q", failed.Warnings)
	}
	denied := turn.Results[2]
	if !denied.Denied || !strings.HasPrefix(denied.Error, "denied: kprobes are not available") {
		t.Errorf("denied result = %+v", denied)
	}
	unconv := turn.Results[3]
	if unconv.Success || !strings.HasPrefix(unconv.Error, `not traced: unknown type "uprobe"`) {
		t.Errorf("unconvertible result = %+v", unconv)
	}
	if rpc := turn.Results[4]; !strings.Contains(rpc.Error, "broker: rpc error") {
		t.Errorf("rpc failure result = %+v", rpc)
	}

	wantEvidence := []string{
		"openat: 400 events (success) - traced tracepoint:syscalls:sys_enter_openat and sys_exit_openat for 2.0s: 400 events (200.00/s); top process 4242,tr-open-a (390 events); average latency 12 µs over 400 calls",
		"syscalls:sys_enter_nope: 0 events (failed) - stdin:1:1-35: ERROR: tracepoint not found: syscalls:sys_enter_nope",
		"vfs_read: 0 events (failed) - denied: kprobes are not available on this kernel (tracefs has no kprobe_events); trace a tracepoint or a syscall instead",
		`/bin/bash:readline: 0 events (failed) - not traced: unknown type "uprobe" (want tracepoint, kprobe, kretprobe, syscall or bpftrace)`,
		"sched:sched_switch: 0 events (failed) - broker: rpc error: code = Unavailable desc = broker gone",
	}
	for i, want := range wantEvidence {
		if turn.Evidence[i] != want {
			t.Errorf("evidence[%d]:\n got %s\nwant %s", i, turn.Evidence[i], want)
		}
	}
	for _, e := range turn.Evidence {
		if strings.Contains(e, "<nil>") || strings.HasSuffix(e, "- ") {
			t.Errorf("evidence line without a summary: %q", e)
		}
	}
}

func TestTurnJSONKeys(t *testing.T) {
	turn := Results([]Trace{{Conversion: Convert(Program{Type: "syscall", Target: "openat"}), Response: okResponse()}})
	b, err := json.Marshal(turn.Fields())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["executed_ebpf_programs"] != float64(1) {
		t.Errorf("executed_ebpf_programs = %v", got["executed_ebpf_programs"])
	}
	if ev, ok := got["ebpf_evidence_summary"].([]any); !ok || len(ev) != 1 {
		t.Errorf("ebpf_evidence_summary = %v", got["ebpf_evidence_summary"])
	}
	results, ok := got["ebpf_results"].([]any)
	if !ok || len(results) != 1 {
		t.Fatalf("ebpf_results = %v", got["ebpf_results"])
	}
	r := results[0].(map[string]any)
	for _, key := range []string{"index", "target", "success", "event_count", "events_per_second", "duration", "summary", "output", "aggregates", "samples"} {
		if _, ok := r[key]; !ok {
			t.Errorf("result lacks key %q: %v", key, r)
		}
	}
	if _, ok := r["error"]; ok {
		t.Error("a successful result carries an error key")
	}
	// The same struct embeds directly into a results object.
	b2, _ := json.Marshal(turn)
	var viaStruct map[string]any
	if err := json.Unmarshal(b2, &viaStruct); err != nil || !reflect.DeepEqual(got, viaStruct) {
		t.Errorf("Fields and the struct marshal differently:\n%s\n%s", b, b2)
	}
	if (Turn{}).Fields() != nil || Results(nil).Fields() != nil {
		t.Error("a turn without eBPF programs must add no keys")
	}
}

func TestOutputBounded(t *testing.T) {
	resp := okResponse()
	for i := 0; i < 500; i++ {
		resp.Samples = append(resp.Samples, strings.Repeat("s", 200))
	}
	r := Results([]Trace{{Conversion: Convert(Program{Type: "syscall", Target: "openat"}), Response: resp}}).Results[0]
	if len(r.Output) > maxOutputBytes+len("…") {
		t.Errorf("output is %d bytes", len(r.Output))
	}
	long := Results([]Trace{{Conversion: Convert(Program{Type: "bpftrace", Target: strings.Repeat("x{", 1000)}), Response: &brokerv1.RunTraceResponse{Error: strings.Repeat("e", 10000)}}}).Results[0]
	if len(long.Target) > maxTargetBytes+3 || len(long.Error) > maxErrorBytes+3 || len(long.Summary) > maxSummaryBytes+3 {
		t.Errorf("unbounded text: target %d error %d summary %d", len(long.Target), len(long.Error), len(long.Summary))
	}
}

// fakeBroker answers RunTrace and records how many ran at once.
type fakeBroker struct {
	running, peak atomic.Int32
	mu            sync.Mutex
	seen          []*brokerv1.TraceSpec
	delay         time.Duration
}

func (f *fakeBroker) RunTrace(ctx context.Context, in *brokerv1.RunTraceRequest, _ ...grpc.CallOption) (*brokerv1.RunTraceResponse, error) {
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	f.mu.Lock()
	f.seen = append(f.seen, in.Spec)
	f.mu.Unlock()
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &brokerv1.RunTraceResponse{Ok: true, Events: int64(len(in.Spec.Target)), Duration: in.Spec.Duration}, nil
}

func TestRunAll(t *testing.T) {
	b := &fakeBroker{delay: 20 * time.Millisecond}
	var programs []Program
	for _, target := range []string{"openat", "read", "write", "fsync", "close", "mmap", "brk"} {
		programs = append(programs, Program{Type: "syscall", Target: target, Duration: time.Second})
	}
	programs = append(programs, Program{Type: "uprobe", Target: "x"})
	turn := RunAll(context.Background(), b, programs, 2)
	if b.peak.Load() > 2 {
		t.Errorf("%d traces ran at once, limit 2", b.peak.Load())
	}
	if len(b.seen) != 7 || turn.Executed != 7 || len(turn.Results) != 8 {
		t.Fatalf("seen %d executed %d results %d", len(b.seen), turn.Executed, len(turn.Results))
	}
	for i, r := range turn.Results[:7] {
		if r.Index != i || r.Target != programs[i].Target || r.EventCount != int64(len(programs[i].Target)) {
			t.Errorf("result %d out of order: %+v", i, r)
		}
	}
	if turn.Results[7].Success || turn.Results[7].Index != 7 {
		t.Errorf("unconvertible item: %+v", turn.Results[7])
	}
}

func TestRunAllCancelled(t *testing.T) {
	b := &fakeBroker{delay: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	turn := RunAll(ctx, b, []Program{{Type: "syscall", Target: "openat"}, {Type: "syscall", Target: "read"}}, 1)
	for _, r := range turn.Results {
		if r.Success || !strings.Contains(r.Error, "context deadline exceeded") {
			t.Errorf("after the deadline: %+v", r)
		}
	}
}

func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		`{"name":"opens","type":"tracepoint","target":"syscalls:sys_enter_openat","duration":5,"filters":{"pid":1},"description":"file opens"}`,
		`{"type":"syscall","target":"__x64_sys_read","filters":{"comm":"postgres","uid":"1000"},"description":"slow reads"}`,
		`{"type":"kretprobe","target":"sys_openat","measure":"ret"}`,
		`{"type":"bpftrace","target":"BEGIN { system(\"id\") }"}`,
		`{"type":"kprobe","target":"k:tcp_connect","filters":"pid 5","duration":"1m"}`,
		`"junk"`, `null`, `[]`, `{"filters":{"pid":1e99,"comm":"\u0000"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Program
		if err := json.Unmarshal(data, &p); err != nil {
			return
		}
		c := Convert(p)
		if c.Spec == nil {
			if c.Err == "" {
				t.Fatal("no spec and no reason")
			}
		} else {
			checkSpec(t, c.Spec)
		}
		tr := Trace{Conversion: c, Response: &brokerv1.RunTraceResponse{Ok: true}}
		turn := Results([]Trace{tr})
		if _, err := json.Marshal(turn.Fields()); err != nil {
			t.Fatalf("results do not marshal: %v", err)
		}
		if strings.Contains(turn.Evidence[0], "<nil>") {
			t.Fatalf("evidence %q", turn.Evidence[0])
		}
	})
}

func checkSpec(t *testing.T, s *brokerv1.TraceSpec) {
	t.Helper()
	if s.Kind == brokerv1.TraceKind_TRACE_KIND_UNSPECIFIED {
		t.Fatal("spec without a kind")
	}
	if d := s.Duration.AsDuration(); d <= 0 || d > maxDuration {
		t.Fatalf("duration %s", d)
	}
	if s.Kind == brokerv1.TraceKind_TRACE_KIND_SYSCALL && (strings.HasPrefix(s.Target, "__x64_sys_") || strings.HasPrefix(s.Target, "__arm64_sys_")) {
		t.Fatalf("architecture symbol %q", s.Target)
	}
	if f := s.Filter; f != nil {
		if f.Pid != nil && f.GetPid() <= 0 {
			t.Fatalf("pid %d", f.GetPid())
		}
		if len(f.Comm) > maxComm {
			t.Fatalf("comm %q", f.Comm)
		}
		for i := 0; i < len(f.Comm); i++ {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-", rune(f.Comm[i])) {
				t.Fatalf("comm %q", f.Comm)
			}
		}
	}
}

func TestHistogramPercentile(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	h := Histogram{Buckets: []Bucket{
		{Range: "[0, 1]", Count: 50, Low: i(0), High: i(1)},
		{Range: "[2, 3]", Count: 40, Low: i(2), High: i(3)},
		{Range: "[4, 7]", Count: 9, Low: i(4), High: i(7)},
		{Range: "[1024, …)", Count: 1, Low: i(1024)},
	}}
	cases := map[int]string{1: "[0, 1]", 50: "[0, 1]", 51: "[2, 3]", 90: "[2, 3]", 99: "[4, 7]", 100: "[1024, …)", 250: "[1024, …)"}
	for p, want := range cases {
		b, ok := h.Percentile(p)
		if !ok || b.Range != want {
			t.Errorf("p%d = %q %v, want %q", p, b.Range, ok, want)
		}
	}
	if h.Count() != 100 {
		t.Errorf("count %d", h.Count())
	}
	if _, ok := (Histogram{}).Percentile(50); ok {
		t.Error("an empty histogram has a percentile")
	}
	if _, ok := h.Percentile(0); ok {
		t.Error("p0 answered")
	}
}

func TestProbeNameFollowsTheMeasure(t *testing.T) {
	cases := map[brokerv1.TraceMeasure]string{
		brokerv1.TraceMeasure_TRACE_MEASURE_COUNT:   "tracepoint:syscalls:sys_enter_write and sys_exit_write",
		brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY: "tracepoint:syscalls:sys_enter_write and sys_exit_write",
		brokerv1.TraceMeasure_TRACE_MEASURE_SIZE:    "tracepoint:syscalls:sys_exit_write",
		brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL:  "tracepoint:syscalls:sys_exit_write",
	}
	for m, want := range cases {
		spec := &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "write", Measure: m}
		if got := probeName(spec); got != want {
			t.Errorf("%s: %q, want %q", m, got, want)
		}
	}
}
