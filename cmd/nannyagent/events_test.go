package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

func i64p(v int64) *int64 { return &v }

// hostile is what a compromised model or a poisoned log line would send.
const hostile = "\x1b]0;owned\x07\x1b[2J\u009b31m\u202eevil"

// sampleEvents is one investigation with every kind of event: an allowed
// pipeline, a broker refusal, a parser refusal, a trace that ran, one that
// failed, one that was refused, a retry and the resolution.
func sampleEvents() []*workerv1.DiagnoseResponse {
	ev := func(e any) *workerv1.DiagnoseResponse {
		switch v := e.(type) {
		case *workerv1.DiagnoseStarted:
			return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Started{Started: v}}
		case *workerv1.DiagnoseTurn:
			return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Turn{Turn: v}}
		case *workerv1.DiagnoseRetry:
			return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Retry{Retry: v}}
		case *workerv1.CommandOutcome:
			return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Command{Command: v}}
		case *workerv1.TraceOutcome:
			return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Trace{Trace: v}}
		case *workerv1.DiagnoseResolution:
			return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Resolution{Resolution: v}}
		case string:
			return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Progress{Progress: v}}
		}
		panic("unknown event")
	}
	return []*workerv1.DiagnoseResponse{
		ev(&workerv1.DiagnoseStarted{InvestigationId: "inv123", Issue: "the disk is slow", MaxTurns: 12, Timeout: durationpb.New(30 * time.Minute)}),
		ev(&workerv1.DiagnoseRetry{Turn: 1, Problem: "not a JSON object"}),
		ev(&workerv1.DiagnoseTurn{Turn: 1, Reasoning: "check usage " + hostile, Commands: 3, Traces: 3}),
		ev(&workerv1.CommandOutcome{Turn: 1, Id: "cmd_1", Command: "ps aux | head -n 3", Allowed: true, Rules: []string{"ps", "head"},
			ExitCode: 0, Duration: durationpb.New(4 * time.Millisecond), OutputLines: 12,
			OutputHead: []string{"USER PID", "root 1 " + hostile}}),
		ev(&workerv1.CommandOutcome{Turn: 1, Id: "cmd_2", Command: "cat /etc/shadow", Allowed: false, Rules: []string{"cat"}, DeniedBy: "broker",
			Reason: `cat: file: path "/etc/shadow": denied by deny_paths rule deny-password-hashes`, ExitCode: 1}),
		ev(&workerv1.CommandOutcome{Turn: 1, Id: "cmd_3", Command: "id; rm -rf /", Allowed: false, DeniedBy: "parser",
			Reason: `";" at offset 2: command chaining is not supported`, ExitCode: 1}),
		ev(&workerv1.TraceOutcome{Turn: 1, Name: "opens", Kind: "syscall", Probe: "tracepoint:syscalls:sys_enter_openat and sys_exit_openat",
			Target: "openat", Measure: "latency", Ok: true, Duration: durationpb.New(2 * time.Second), Events: 400, EventsPerSecond: 200,
			TopProcesses: []*workerv1.KeyCount{{Key: "4242,postgres", Count: 390}}, TopPaths: []*workerv1.KeyCount{{Key: "/var/lib/pg", Count: 7}},
			Errors:     []*workerv1.KeyCount{{Key: "2", Count: 3}},
			Histograms: []*workerv1.HistogramSummary{{Map: "@latency_us", Count: 400, Average: 12, Percentiles: []*workerv1.Percentile{{Percent: 50, Low: i64p(8), High: i64p(15)}, {Percent: 99, Low: i64p(1024)}}}}}),
		ev(&workerv1.TraceOutcome{Turn: 1, Name: "nope", Kind: "tracepoint", Probe: "tracepoint:sched:sched_nope", Target: "sched:sched_nope",
			Error: "tracepoint sched:sched_nope does not exist on this kernel"}),
		ev(&workerv1.TraceOutcome{Turn: 1, Name: "raw", Kind: "raw", Denied: true, Error: "denied: raw programs are off"}),
		ev("still working"),
		ev(&workerv1.DiagnoseResolution{RootCause: "disk full " + hostile, ResolutionPlan: "1. free space\n2. rotate logs", Confidence: "High"}),
	}
}

func TestTextEvents(t *testing.T) {
	var out bytes.Buffer
	p := &eventPrinter{w: &out, verbose: true}
	resolved := false
	for _, ev := range sampleEvents() {
		resolved = p.event(ev) || resolved
	}
	text := out.String()
	if !resolved {
		t.Error("resolution not seen")
	}
	for _, want := range []string{
		`Investigation inv123 started: "the disk is slow"`,
		"(at most 12 turns and 30m0s;",
		"--- turn 1: the model's answer could not be used (not a JSON object)",
		"--- turn 1: the model asks for 3 commands and 3 traces",
		`reasoning: check usage \x1b]0;owned\x07\x1b[2J\u009b31m\u202eevil`,
		"  ran      ps aux | head -n 3\n           allowed by rules ps | head; exit 0 in 4ms; 12 lines of output",
		"           | root 1 \\x1b]0;owned",
		"           | (10 more)",
		"  DENIED   cat /etc/shadow\n           denied by the broker's policy, rule cat:\n           cat: file: path \"/etc/shadow\": denied by deny_paths rule deny-password-hashes",
		"  DENIED   id; rm -rf /\n           denied before it reached the broker (the command line itself is refused):",
		"  traced   opens: tracepoint:syscalls:sys_enter_openat and sys_exit_openat\n           for 2s: 400 events (200.0/s)",
		"top processes: 4242,postgres (390)",
		"top paths: /var/lib/pg (7)",
		"errors (errno): 2 (3)",
		"@latency_us: p50 8–15, p99 ≥1024 (n=400, average 12)",
		"  FAILED   trace nope: tracepoint:sched:sched_nope\n           tracepoint sched:sched_nope does not exist on this kernel",
		"  DENIED   trace raw\n           denied: raw programs are off",
		"=== DIAGNOSIS COMPLETE ===\nRoot cause: disk full \\x1b",
		"Resolution plan:\n  1. free space\n  2. rotate logs",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if strings.ContainsAny(text, "\x1b\x07\u009b\u202e") {
		t.Errorf("a control character reached the output:\n%q", text)
	}
	// Without -v the output lines stay hidden.
	var quiet bytes.Buffer
	q := &eventPrinter{w: &quiet}
	for _, ev := range sampleEvents() {
		q.event(ev)
	}
	if strings.Contains(quiet.String(), "| USER PID") {
		t.Error("output lines shown without -v")
	}
}

// documentedEvents reads the example lines of cmd/README.md: the keys each
// event may carry, top level and nested.
func documentedEvents(t *testing.T) map[string]map[string]bool {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(data)[strings.Index(string(data), "### `diagnose --json`"):]
	block := section[strings.Index(section, "```json\n")+8:]
	block = block[:strings.Index(block, "```")]
	docs := map[string]map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(block))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("README example %q: %v", sc.Text(), err)
		}
		docs[m["event"].(string)] = keyPaths("", m)
	}
	return docs
}

// keyPaths lists every key of a JSON value as a dotted path (array items
// as "[]").
func keyPaths(prefix string, v any) map[string]bool {
	out := map[string]bool{}
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			out[prefix+k] = true
			for p := range keyPaths(prefix+k+".", sub) {
				out[p] = true
			}
		}
	case []any:
		for _, sub := range x {
			for p := range keyPaths(strings.TrimSuffix(prefix, ".")+"[].", sub) {
				out[p] = true
			}
		}
	}
	return out
}

func TestJSONEventsMatchTheDocumentedSchema(t *testing.T) {
	docs := documentedEvents(t)
	var out bytes.Buffer
	p := &eventPrinter{w: &out, json: true}
	for _, ev := range sampleEvents() {
		p.event(ev)
	}
	p.failed("turn 3: no resolution after 12 turns")
	p.end(exitFailed)
	stream := out.String()
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(stream))
	for sc.Scan() {
		line := sc.Text()
		if strings.ContainsAny(line, "\x1b\x07\u009b\u202e") {
			t.Errorf("raw control character in %q", line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		name, _ := m["event"].(string)
		doc, ok := docs[name]
		if !ok {
			t.Errorf("event %q is not documented", name)
			continue
		}
		seen[name] = true
		if m["investigation_id"] != "inv123" {
			t.Errorf("%s without the investigation id: %s", name, line)
		}
		var extra []string
		for k := range keyPaths("", m) {
			if !doc[k] {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		if len(extra) > 0 {
			t.Errorf("%s carries undocumented keys %v: %s", name, extra, line)
		}
	}
	for name := range docs {
		if !seen[name] {
			t.Errorf("documented event %q never emitted by the test stream", name)
		}
	}
	// The nested objects carry every documented key, empty or not, so a
	// consumer can rely on them.
	lines := strings.Split(strings.TrimSpace(stream), "\n")
	for _, l := range lines {
		var m map[string]any
		_ = json.Unmarshal([]byte(l), &m)
		for _, obj := range []string{"command", "trace"} {
			sub, ok := m[obj].(map[string]any)
			if !ok {
				continue
			}
			for k := range docs[obj] {
				if name, ok := strings.CutPrefix(k, obj+"."); ok && !strings.Contains(name, ".") && !slices.Contains([]string{"denied_by", "reason", "error"}, name) {
					if _, present := sub[name]; !present {
						t.Errorf("%s lacks %s: %s", obj, name, l)
					}
				}
			}
		}
	}
	var decoded struct {
		Command jsonCommand `json:"command"`
	}
	_ = json.Unmarshal([]byte(lines[4]), &decoded)
	if decoded.Command.Allowed || decoded.Command.DeniedBy != "broker" || !slices.Equal(decoded.Command.Rules, []string{"cat"}) {
		t.Errorf("denied command as JSON: %+v", decoded.Command)
	}
}
