package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"testing"

	"github.com/nannyai/nannyagent/test/fakeapi"
)

const tracePolicy = `version: 1
commands:
  - {id: uptime, program: /usr/bin/uptime}
traces:
  bpftrace: /usr/bin/bpftrace
  kinds: [tracepoint, syscall]
  rules:
    - {id: trace-sched, kind: tracepoint, target: "sched:*"}
    - {id: trace-syscalls, kind: syscall, target: "*"}
`

// TestInvestigationWithTraces runs a diagnosis whose model asks for eBPF
// traces: the worker converts them, the broker writes and runs the
// programs, and the next turn carries the reference agent's keys.
func TestInvestigationWithTraces(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("/usr/bin/bpftrace"); err != nil {
		t.Skip("bpftrace not installed: " + err.Error())
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/sched"); err != nil {
		t.Skip("tracefs not mounted: " + err.Error())
	}
	diagnostic := `{"response_type":"diagnostic","reasoning":"watch execs and reads","commands":["uptime"],
		"ebpf_programs":[
			{"name":"execs","type":"tracepoint","target":"sched:sched_process_exec","duration":1,"description":"new processes"},
			{"name":"reads","type":"syscall","target":"read","duration":1,"description":"read latency"},
			{"name":"raw","type":"bpftrace","target":"BEGIN { system(\"id\"); }","duration":1}]}`
	ai := fakeapi.NewScriptedAI(diagnostic, fakeapi.Resolution("quiet host", "1. nothing to do"))
	srv := startFake(t, fakeapi.Options{AI: ai})
	_, creds := registeredStack(t, srv, tracePolicy)
	id, err := srv.CreateInvestigation(creds.ID, "something keeps spawning processes", "high")
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, srv, id, "completed")
	var second string
	for _, tr := range srv.AITurns() {
		if tr.InvestigationID == id && tr.Round == 2 {
			second = tr.Messages[2].Content
		}
	}
	var turn struct {
		Executed int `json:"executed_ebpf_programs"`
		Results  []struct {
			Target  string `json:"target"`
			Success bool   `json:"success"`
			Error   string `json:"error"`
			Denied  bool   `json:"denied"`
		} `json:"ebpf_results"`
		Evidence []string `json:"ebpf_evidence_summary"`
	}
	if err := json.Unmarshal([]byte(second), &turn); err != nil {
		t.Fatalf("second turn: %v\n%s", err, second)
	}
	if len(turn.Results) != 3 || len(turn.Evidence) != 3 {
		t.Fatalf("eBPF results %+v\n%s", turn, second)
	}
	for i, r := range turn.Results[:2] {
		if !r.Success {
			t.Errorf("trace %d (%s) failed: %s", i, r.Target, r.Error)
		}
	}
	if raw := turn.Results[2]; raw.Success || raw.Error == "" {
		t.Errorf("a raw program was not refused: %+v", raw)
	}
}
