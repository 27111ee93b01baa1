package investigate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// fakeBroker answers RunCommand from a table and counts concurrency.
type fakeBroker struct {
	mu       sync.Mutex
	inFlight int
	peak     int
	delay    time.Duration
	answer   func(*brokerv1.RunCommandRequest) (*brokerv1.RunCommandResponse, error)
}

func (b *fakeBroker) RunCommand(ctx context.Context, in *brokerv1.RunCommandRequest, _ ...grpc.CallOption) (*brokerv1.RunCommandResponse, error) {
	b.mu.Lock()
	b.inFlight++
	b.peak = max(b.peak, b.inFlight)
	b.mu.Unlock()
	defer func() { b.mu.Lock(); b.inFlight--; b.mu.Unlock() }()
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.answer(in)
}

func splitParse(s string) ([]*brokerv1.Stage, error) {
	if strings.ContainsAny(s, ";&") {
		return nil, fmt.Errorf("%q at offset %d: command chaining is not supported", ";", strings.IndexAny(s, ";&"))
	}
	var stages []*brokerv1.Stage
	for _, part := range strings.Split(s, "|") {
		stages = append(stages, &brokerv1.Stage{Argv: strings.Fields(part)})
	}
	return stages, nil
}

func allow(in *brokerv1.RunCommandRequest) (*brokerv1.RunCommandResponse, error) {
	switch in.GetCommandLine() {
	case "cat /etc/shadow":
		return &brokerv1.RunCommandResponse{Id: in.GetId(), Decision: &brokerv1.Decision{Reason: "/etc/shadow is a denied path (shadow)",
			Stages: []*brokerv1.StageDecision{{RuleId: "cat", Reason: "/etc/shadow is a denied path (shadow)"}}}}, nil
	case "big":
		return &brokerv1.RunCommandResponse{Id: in.GetId(), Decision: &brokerv1.Decision{Allowed: true}, Stdout: []byte("x"), StdoutTruncated: true}, nil
	case "fail":
		return nil, errors.New("broker down")
	}
	var stages []*brokerv1.StageDecision
	for _, st := range in.GetStages() {
		stages = append(stages, &brokerv1.StageDecision{Allowed: true, RuleId: st.GetArgv()[0]})
	}
	return &brokerv1.RunCommandResponse{
		Id: in.GetId(), Decision: &brokerv1.Decision{Allowed: true, Stages: stages}, ExitCode: 0,
		Stdout: []byte("out of " + in.GetCommandLine() + " token=abc123"), Stderr: []byte("warn"),
	}, nil
}

func redactToken(s string) string { return strings.ReplaceAll(s, "token=abc123", "token=[REDACTED]") }

func TestCommandsRun(t *testing.T) {
	b := &fakeBroker{answer: allow, delay: 20 * time.Millisecond}
	c := &Commands{Broker: b, Parse: splitParse, Redact: redactToken, Parallel: 2}
	cmds := []Command{
		{ID: "a", Text: "uptime"}, {ID: "b", Text: "cat /etc/shadow"}, {ID: "c", Text: "id; rm -rf /"},
		{ID: "d", Text: "big"}, {ID: "e", Text: "fail"}, {ID: "f", Text: "ps aux | head"},
	}
	res := c.Run(context.Background(), cmds)
	if b.peak > 2 {
		t.Errorf("%d commands in flight, limit 2", b.peak)
	}
	for i, r := range res {
		if r.ID != cmds[i].ID {
			t.Fatalf("result %d is %s: order lost", i, r.ID)
		}
	}
	checks := []struct {
		i      int
		denied bool
		errHas string
		outHas string
	}{
		{0, false, "", "out of uptime token=[REDACTED]\nwarn"},
		{1, true, "denied: /etc/shadow is a denied path", ""},
		{2, true, "denied: \";\" at offset 2", ""},
		{3, false, "", "[stdout truncated]"},
		{4, false, "broker: broker down", ""},
		{5, false, "", "out of ps aux | head"},
	}
	for _, ck := range checks {
		r := res[ck.i]
		if r.Denied != ck.denied || !strings.Contains(r.Error, ck.errHas) || !strings.Contains(r.Output, ck.outHas) {
			t.Errorf("%s: %+v", r.ID, r)
		}
		if ck.errHas != "" && r.ExitCode == 0 {
			t.Errorf("%s: failed command with exit code 0", r.ID)
		}
	}
	if !res[3].Truncated {
		t.Error("truncation not flagged")
	}
	// What the person sees: rules per stage, who refused and why.
	if got := strings.Join(res[5].Rules, ","); got != "ps,head" {
		t.Errorf("pipeline rules %q, want ps,head", got)
	}
	if res[1].DeniedBy != DeniedByBroker || strings.Join(res[1].Rules, ",") != "cat" || res[1].Reason != "/etc/shadow is a denied path (shadow)" {
		t.Errorf("broker refusal shown as %+v", res[1])
	}
	if res[2].DeniedBy != DeniedByParser || len(res[2].Rules) != 0 || strings.HasPrefix(res[2].Reason, "denied") {
		t.Errorf("parser refusal shown as %+v", res[2])
	}
	if res[4].Denied || res[4].Reason != "broker: broker down" {
		t.Errorf("broker failure shown as %+v", res[4])
	}
}

// scriptedModel answers from a list and records what it was sent.
type scriptedModel struct {
	answers []string
	calls   [][]Message
	err     error
}

func (m *scriptedModel) Turn(_ context.Context, _ string, msgs []Message) (string, error) {
	m.calls = append(m.calls, append([]Message(nil), msgs...))
	if m.err != nil {
		return "", m.err
	}
	if len(m.calls) > len(m.answers) {
		return `{"response_type":"diagnostic","commands":["uptime"]}`, nil
	}
	return m.answers[len(m.calls)-1], nil
}

type recordingReporter struct{ reasons []string }

func (r *recordingReporter) Fail(_ context.Context, _ string, reason string) error {
	r.reasons = append(r.reasons, reason)
	return nil
}

type countingTracer struct{ n atomic.Int32 }

func (c *countingTracer) Run(_ context.Context, programs []json.RawMessage) TraceRun {
	c.n.Add(int32(len(programs)))
	run := TraceRun{Fields: map[string]any{"ebpf_results": []any{map[string]any{"index": 0}}, "executed_ebpf_programs": len(programs), "ebpf_evidence_summary": []string{"x"}}}
	for range programs {
		run.Outcomes = append(run.Outcomes, TraceOutcome{Probe: "tracepoint:syscalls:sys_enter_openat", OK: true, Events: 7})
	}
	return run
}

func newLoop(m Model, rep *recordingReporter, tr Tracer, events *[]Event) *Loop {
	return &Loop{
		Model:    m,
		Commands: &Commands{Broker: &fakeBroker{answer: allow}, Parse: splitParse, Parallel: 4},
		Tracer:   tr, Reporter: rep, MaxTurns: 4,
		Progress: func(ev Event) { *events = append(*events, ev) },
	}
}

func TestLoopResolves(t *testing.T) {
	m := &scriptedModel{answers: []string{
		`{"response_type":"diagnostic","reasoning":"look","commands":["uptime","cat /etc/shadow"],"ebpf_programs":[{"type":"syscall","target":"openat"}]}`,
		"```json\n{\"response_type\":\"resolution\",\"root_cause\":\"load\",\"resolution_plan\":\"1. reduce load\",\"confidence\":\"High\"}\n```",
	}}
	rep := &recordingReporter{}
	tr := &countingTracer{}
	var events []Event
	reply, err := newLoop(m, rep, tr, &events).Run(context.Background(), "inv1", "SYSTEM INFORMATION:\n...\nhigh load")
	if err != nil {
		t.Fatal(err)
	}
	if reply.ResolutionPlan != "1. reduce load" || len(rep.reasons) != 0 || tr.n.Load() != 1 {
		t.Fatalf("reply %+v reasons %v traces %d", reply, rep.reasons, tr.n.Load())
	}
	second := m.calls[1]
	if len(second) != 3 || second[1].Role != "assistant" || second[2].Role != "user" {
		t.Fatalf("conversation %+v", second)
	}
	var turn map[string]any
	if err := json.Unmarshal([]byte(second[2].Content), &turn); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"command_results", "executed_commands", "ebpf_results", "executed_ebpf_programs", "ebpf_evidence_summary"} {
		if _, ok := turn[key]; !ok {
			t.Errorf("turn message lacks %s", key)
		}
	}
	results := turn["command_results"].([]any)
	denied := results[1].(map[string]any)
	if denied["error"] != "denied: /etc/shadow is a denied path (shadow)" {
		t.Errorf("denied command result %v", denied)
	}
	// The person sees the turn open, each command, each trace, then the
	// resolution, in that order.
	want := []string{"investigate.TurnStarted", "investigate.CommandDone", "investigate.CommandDone", "investigate.TraceDone", "investigate.Resolved"}
	if len(events) != len(want) {
		t.Fatalf("events %+v", events)
	}
	for i, ev := range events {
		if got := fmt.Sprintf("%T", ev); got != want[i] {
			t.Errorf("event %d is %s, want %s", i, got, want[i])
		}
	}
	if ts := events[0].(TurnStarted); ts.Turn != 1 || ts.Reasoning != "look" || ts.Commands != 2 || ts.Traces != 1 {
		t.Errorf("turn started %+v", ts)
	}
	if c := events[2].(CommandDone); !c.Result.Denied || c.Result.Command != "cat /etc/shadow" || c.Turn != 1 {
		t.Errorf("second command %+v", c)
	}
	if tr := events[3].(TraceDone); !tr.Trace.OK || tr.Trace.Events != 7 {
		t.Errorf("trace %+v", tr)
	}
}

func TestLoopFailures(t *testing.T) {
	tests := []struct {
		name    string
		model   *scriptedModel
		timeout time.Duration
		wantErr string
	}{
		{"model error", &scriptedModel{err: errors.New("proxy 400")}, 0, "proxy 400"},
		{"two unusable answers", &scriptedModel{answers: []string{"hello", "still prose"}}, 0, "unusable answer"},
		{"no resolution", &scriptedModel{}, 0, "no resolution after 4 turns"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := &recordingReporter{}
			var events []Event
			l := newLoop(tc.model, rep, nil, &events)
			_, err := l.Run(context.Background(), "inv", "issue")
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if len(rep.reasons) != 1 || !strings.Contains(rep.reasons[0], tc.wantErr) {
				t.Errorf("failure not reported to the backend: %v", rep.reasons)
			}
		})
	}
}

func TestLoopCorrectsOnce(t *testing.T) {
	m := &scriptedModel{answers: []string{"prose", `{"response_type":"resolution","resolution_plan":"p"}`}}
	var events []Event
	if _, err := newLoop(m, &recordingReporter{}, nil, &events).Run(context.Background(), "i", "issue"); err != nil {
		t.Fatal(err)
	}
	last := m.calls[1][len(m.calls[1])-1]
	if last.Role != "user" || !strings.Contains(last.Content, "could not be used") {
		t.Errorf("no correction sent: %+v", last)
	}
	if len(events) != 2 {
		t.Fatalf("events %+v", events)
	}
	if r, ok := events[0].(Retried); !ok || r.Turn != 1 || !strings.Contains(r.Problem, "not a JSON object") {
		t.Errorf("retry not shown: %+v", events[0])
	}
}

func TestLoopTimeout(t *testing.T) {
	m := &scriptedModel{}
	rep := &recordingReporter{}
	var events []Event
	l := newLoop(m, rep, nil, &events)
	l.Commands.Broker = &fakeBroker{answer: allow, delay: time.Second}
	l.Timeout = 100 * time.Millisecond
	_, err := l.Run(context.Background(), "i", "issue")
	if !errors.Is(err, context.DeadlineExceeded) || len(rep.reasons) != 1 {
		t.Errorf("err %v reasons %v", err, rep.reasons)
	}
}

func TestSystemInfo(t *testing.T) {
	m := &brokerv1.CollectMetricsResponse{
		Host:          &brokerv1.HostFacts{Hostname: "db1", Platform: "debian", PlatformVersion: "12", KernelRelease: "6.1.0", Arch: "x86_64"},
		LogicalCpus:   8,
		Memory:        &brokerv1.Memory{Total: 16 << 30},
		UptimeSeconds: 3*86400 + 4*3600,
		Load:          &brokerv1.LoadAverage{One: 1.5, Five: 1, Fifteen: 0.25},
		Filesystems:   []*brokerv1.Filesystem{{MountPath: "/", Total: 50 << 30, Used: 10 << 30}},
		Ips:           []string{"10.0.0.5", "8.8.8.8", "fe80::1"},
	}
	got := FirstMessage(m, "postgres is slow")
	for _, want := range []string{
		"SYSTEM INFORMATION:\n", "- Hostname: db1\n", "- Operating System: debian 12\n", "- CPU Cores: 8\n",
		"- Total Memory: 16.0GiB\n", "- System Uptime: up 3 days, 4 hours\n", "- Current Load Average: 1.50, 1.00, 0.25\n",
		"- Root Disk Usage: Root: 10.0GiB/50.0GiB (20% used)\n", "- Private IP Addresses: 10.0.0.5\n",
		"\nISSUE DESCRIPTION:\npostgres is slow",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}
