package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
)

// escape is what a hostile model or a poisoned log line would put in front
// of an operator: a window title change, a screen clear, a C1 CSI and a
// right-to-left override.
const escape = "\x1b]0;owned\x07\x1b[2J\u009b31m\u202e"

// operatorTurn asks for an allowed command, a denied one (a private key),
// a tracepoint trace that runs and one whose tracepoint does not exist.
var operatorTurn = `{"response_type":"diagnostic","reasoning":"load, then the host key ` + jsonEscape(escape) + `",
	"commands":[{"id":"c1","command":"uptime","description":"load"},
	            {"id":"c2","command":"cat /etc/ssh/ssh_host_ed25519_key","description":"the host key"}],
	"ebpf_programs":[
		{"name":"opens","type":"tracepoint","target":"syscalls:sys_enter_openat","duration":1,"description":"who opens files"},
		{"name":"ghost","type":"tracepoint","target":"sched:sched_no_such_event","duration":1,"description":"a tracepoint this kernel lacks"}]}`

func jsonEscape(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

func requireTracing(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("/usr/bin/bpftrace"); err != nil {
		t.Skip("bpftrace not installed: " + err.Error())
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/syscalls"); err != nil {
		t.Skip("tracefs not mounted: " + err.Error())
	}
}

func operatorStack(t *testing.T, ai fakeapi.AI) (*stack.Stack, *fakeapi.Server) {
	t.Helper()
	policy, _ := vendorPolicy(t)
	srv := startFake(t, fakeapi.Options{AI: ai})
	s, _ := registeredStack(t, srv, policy)
	return s, srv
}

func diagnoseCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestDiagnoseTextShowsEveryStep runs `nannyagent diagnose -v` and reads
// what an operator reads: each command allowed or denied with its rule and
// reason, exit codes and output lines, each trace's probe and numbers or
// its failure, the reasoning, and the resolution, with no control
// character from the model reaching the terminal.
func TestDiagnoseTextShowsEveryStep(t *testing.T) {
	requireTracing(t)
	ai := fakeapi.NewScriptedAI(operatorTurn, fakeapi.Resolution("the disk is full "+escape, "1. free space\n2. rotate logs"))
	s, _ := operatorStack(t, ai)
	res := s.CLI(diagnoseCtx(t), nil, "diagnose", "-v", "the disk is slow today")
	if res.Code != 0 {
		t.Fatalf("diagnose exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	out := res.Stdout
	for _, want := range []string{
		"--- turn 1: the model asks for 2 commands and 2 traces",
		`reasoning: load, then the host key \x1b]0;owned\x07\x1b[2J\u009b31m\u202e`,
		"  ran      uptime\n           allowed by rule uptime; exit 0 in ",
		"           | ", // uptime's output line
		"load average",
		"  DENIED   cat /etc/ssh/ssh_host_ed25519_key\n           denied by the broker's policy, rule cat:",
		"denied by deny_paths rule deny-ssh-keys",
		"  traced   opens: tracepoint:syscalls:sys_enter_openat\n           for ",
		" events (",
		"top processes: ",
		"  FAILED   trace ghost: tracepoint:sched:sched_no_such_event\n",
		"=== DIAGNOSIS COMPLETE ===\nRoot cause: the disk is full \\x1b]0;owned",
		"Resolution plan:\n  1. free space\n  2. rotate logs",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnose output lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out+res.Stderr, "\x1b\x07\u009b\u202e") {
		t.Errorf("a control character from the model reached the terminal:\n%q", out)
	}
	// The failed trace says why, in the broker's words.
	failed := out[strings.Index(out, "  FAILED   trace ghost"):]
	if reason := strings.SplitN(failed, "\n", 3)[1]; len(strings.TrimSpace(reason)) < 10 {
		t.Errorf("the failed trace has no reason: %q", reason)
	}
}

// diagnoseEvent is the part of the --json schema the tests read.
type diagnoseEvent struct {
	Event           string `json:"event"`
	InvestigationID string `json:"investigation_id"`
	Turn            int    `json:"turn"`
	Reasoning       string `json:"reasoning"`
	Command         *struct {
		Command    string   `json:"command"`
		Allowed    bool     `json:"allowed"`
		Rules      []string `json:"rules"`
		DeniedBy   string   `json:"denied_by"`
		Reason     string   `json:"reason"`
		ExitCode   int      `json:"exit_code"`
		OutputHead []string `json:"output_head"`
	} `json:"command"`
	Trace *struct {
		Name         string  `json:"name"`
		Probe        string  `json:"probe"`
		OK           bool    `json:"ok"`
		Error        string  `json:"error"`
		Events       int64   `json:"events"`
		Rate         float64 `json:"events_per_second"`
		Duration     float64 `json:"duration_seconds"`
		TopProcesses []struct {
			Key   string `json:"key"`
			Count int64  `json:"count"`
		} `json:"top_processes"`
	} `json:"trace"`
	RootCause string `json:"root_cause"`
	Reason    string `json:"reason"`
	Outcome   string `json:"outcome"`
	ExitCode  *int   `json:"exit_code"`
}

func jsonEvents(t *testing.T, stdout string) []diagnoseEvent {
	t.Helper()
	var evs []diagnoseEvent
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev diagnoseEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestDiagnoseJSONStream(t *testing.T) {
	requireTracing(t)
	ai := fakeapi.NewScriptedAI(operatorTurn, fakeapi.Resolution("the disk is full", "1. free space"))
	s, _ := operatorStack(t, ai)
	res := s.CLI(diagnoseCtx(t), nil, "diagnose", "--json", "the disk is slow today")
	if res.Code != 0 {
		t.Fatalf("diagnose --json exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if strings.ContainsAny(res.Stdout, "\x1b\x07\u009b\u202e") {
		t.Errorf("raw control characters in the JSON stream")
	}
	evs := jsonEvents(t, res.Stdout)
	var order []string
	var allowed, denied, ran, failed, resolved, turn bool
	for _, ev := range evs {
		order = append(order, ev.Event)
		if ev.InvestigationID == "" {
			t.Errorf("%s without investigation_id", ev.Event)
		}
		switch ev.Event {
		case "turn":
			turn = ev.Turn == 1 && strings.Contains(ev.Reasoning, escape)
		case "command":
			c := ev.Command
			switch c.Command {
			case "uptime":
				allowed = c.Allowed && len(c.Rules) == 1 && c.Rules[0] == "uptime" && c.ExitCode == 0 &&
					len(c.OutputHead) == 1 && strings.Contains(c.OutputHead[0], "load average")
			case "cat /etc/ssh/ssh_host_ed25519_key":
				denied = !c.Allowed && c.DeniedBy == "broker" && len(c.Rules) == 1 && c.Rules[0] == "cat" && strings.Contains(c.Reason, "deny-ssh-keys")
			}
		case "trace":
			tr := ev.Trace
			switch tr.Name {
			case "opens":
				ran = tr.OK && tr.Probe == "tracepoint:syscalls:sys_enter_openat" && tr.Events > 0 && tr.Rate > 0 && tr.Duration > 0 && len(tr.TopProcesses) > 0
			case "ghost":
				failed = !tr.OK && tr.Error != ""
			}
		case "resolution":
			resolved = ev.RootCause == "the disk is full"
		}
	}
	if !turn || !allowed || !denied || !ran || !failed || !resolved {
		t.Errorf("turn %v allowed %v denied %v trace ran %v trace failed %v resolved %v\n%s", turn, allowed, denied, ran, failed, resolved, res.Stdout)
	}
	wantOrder := "started turn command command trace trace resolution end"
	if got := strings.Join(order, " "); got != wantOrder {
		t.Errorf("event order %q, want %q", got, wantOrder)
	}
	if last := evs[len(evs)-1]; last.Outcome != "resolved" || last.ExitCode == nil || *last.ExitCode != 0 {
		t.Errorf("end event %+v", last)
	}
}

// A diagnosis that fails says why and exits 1, in text and in JSON.
func TestDiagnoseFailure(t *testing.T) {
	ai := fakeapi.AIFunc(func(context.Context, fakeapi.AITurn) (string, error) {
		return "", errString("model overloaded")
	})
	s, _ := operatorStack(t, ai)
	res := s.CLI(diagnoseCtx(t), nil, "diagnose", "the disk is slow today")
	if res.Code != 1 || !strings.Contains(res.Stdout, "=== DIAGNOSIS FAILED ===") || !strings.Contains(res.Stdout, "model overloaded") {
		t.Errorf("exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	res = s.CLI(diagnoseCtx(t), nil, "diagnose", "--json", "the disk is slow today")
	evs := jsonEvents(t, res.Stdout)
	if res.Code != 1 || len(evs) < 3 {
		t.Fatalf("exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	fail, end := evs[len(evs)-2], evs[len(evs)-1]
	if fail.Event != "failed" || !strings.Contains(fail.Reason, "model overloaded") || end.Outcome != "failed" || *end.ExitCode != 1 {
		t.Errorf("ending events %+v %+v", fail, end)
	}
	// Usage: an issue too short never reaches the worker.
	if res := s.CLI(diagnoseCtx(t), nil, "diagnose", "slow"); res.Code != 2 || !strings.Contains(res.Stderr, "too short") {
		t.Errorf("short issue: exit %d %s", res.Code, res.Stderr)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// --timeout bounds diagnose, register and status; the worker stops the
// investigation and marks it failed on the backend.
func TestTimeoutIsHonoured(t *testing.T) {
	ai := fakeapi.AIFunc(func(ctx context.Context, _ fakeapi.AITurn) (string, error) {
		<-ctx.Done() // a model that never answers
		return "", ctx.Err()
	})
	s, srv := operatorStack(t, ai)
	start := time.Now()
	res := s.CLI(diagnoseCtx(t), nil, "diagnose", "--timeout", "1s", "the disk is slow today")
	if res.Code != 1 || !strings.Contains(res.Stdout, "did not finish within --timeout 1s") {
		t.Errorf("diagnose --timeout: exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("diagnose --timeout 1s took %s", took)
	}
	var id string
	for _, line := range strings.Split(res.Stdout, "\n") {
		if rest, ok := strings.CutPrefix(line, "Investigation "); ok {
			id = strings.Fields(rest)[0]
		}
	}
	if id == "" {
		t.Fatalf("no investigation id in %s", res.Stdout)
	}
	waitStatus(t, srv, id, "failed")

	// register --force waits for a person to approve the code; --timeout
	// stops the wait. (Only root may register.)
	if os.Geteuid() == 0 {
		res = s.CLI(diagnoseCtx(t), nil, "register", "--force", "--timeout", "1s")
		if res.Code != 1 || !strings.Contains(res.Stderr, "registration did not finish within --timeout 1s") {
			t.Errorf("register --timeout: exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
		}
	}
	res = s.CLI(diagnoseCtx(t), nil, "status", "--timeout", "1ns")
	if res.Code != 1 || !strings.Contains(res.Stderr, "did not answer in time") {
		t.Errorf("status --timeout 1ns: exit %d:\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
}
