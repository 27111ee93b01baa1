package worker

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/worker/investigate"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// Status lists the recent operations of every kind recorded, with how each
// ended, and adds what this process remembers of its investigations.
func TestStatusOperations(t *testing.T) {
	cfg := testConfig(t)
	w, err := New(cfg, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	record := func(kind opstate.Kind, id string, o opstate.Outcome, info opstate.ClaimInfo) {
		t.Helper()
		if _, st, err := w.ops.Claim(kind, id, info); err != nil || st != opstate.Claimed {
			t.Fatalf("claim %s: %v %v", id, st, err)
		}
		if _, err := w.ops.Start(kind, id); err != nil {
			t.Fatal(err)
		}
		if err := w.ops.Finish(kind, id, o); err != nil {
			t.Fatal(err)
		}
	}
	record(opstate.Patch, "patch1", opstate.Outcome{State: opstate.Failed, Note: "refused: patch scripts are off in the policy"}, opstate.ClaimInfo{Mode: "apply"})
	record(opstate.Reboot, "reboot1", opstate.Outcome{State: opstate.Skipped, Note: "refused: reboots are off in the policy"}, opstate.ClaimInfo{})
	record(opstate.Investigation, "portal1", opstate.Outcome{State: opstate.Done}, opstate.ClaimInfo{})
	w.recent.begin("portal1", "nginx answers 502", originPortal, time.Now())
	w.recent.end("portal1", &investigate.Reply{RootCause: "upstream down"}, nil, time.Now())
	// A CLI diagnosis: the record keeps it skipped, memory knows it failed.
	if err := w.ops.MarkOwn("cli1"); err != nil {
		t.Fatal(err)
	}
	w.recent.begin("cli1", "the disk is slow", originCLI, time.Now())
	w.recent.end("cli1", nil, errFor("turn 2: no resolution"), time.Now())
	// Another from an earlier run of the worker: its outcome is unknown.
	if err := w.ops.MarkOwn("old1"); err != nil {
		t.Fatal(err)
	}

	byID := map[string]string{}
	var kinds []string
	for _, op := range w.operations() {
		byID[op.GetId()] = strings.Join([]string{op.GetKind(), op.GetState(), op.GetNote(), op.GetIssue(), op.GetRootCause(), op.GetMode()}, "|")
		if len(kinds) == 0 || kinds[len(kinds)-1] != op.GetKind() {
			kinds = append(kinds, op.GetKind())
		}
	}
	want := map[string]string{
		"patch1":  "patch|failed|refused: patch scripts are off in the policy|||apply",
		"reboot1": "reboot|skipped|refused: reboots are off in the policy|||",
		"portal1": "investigation|done||nginx answers 502|upstream down|",
		"cli1":    "investigation|failed|turn 2: no resolution|the disk is slow||",
		"old1":    "investigation|unknown|run from the CLI; its outcome is not kept across a restart of the worker|||",
	}
	for id, w := range want {
		if byID[id] != w {
			t.Errorf("%s: %q, want %q", id, byID[id], w)
		}
	}
	if strings.Join(kinds, ",") != "investigation,patch,reboot" {
		t.Errorf("sections %v", kinds)
	}
}

type errFor string

func (e errFor) Error() string { return string(e) }

// Each degraded part of the broker's probe comes with its fix.
func TestBrokerProblems(t *testing.T) {
	w, err := New(testConfig(t), "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	probe := &brokerv1.ProbeResponse{
		Bpftrace: &brokerv1.BpftraceInfo{Error: `exec: "bpftrace": executable file not found in $PATH`},
		Tracefs:  &brokerv1.TracefsInfo{},
	}
	cases := []struct {
		b    *workerv1.BrokerStatus
		want map[string]string // fix -> part of what
	}{
		{&workerv1.BrokerStatus{Error: "connection refused"}, map[string]string{"systemctl start nannyagent-broker.socket": "connection refused"}},
		{&workerv1.BrokerStatus{Reachable: true, Probe: probe}, map[string]string{
			"apt-get install bpftrace":                     "bpftrace is not installed",
			"mount -t tracefs tracefs /sys/kernel/tracing": "tracefs is not mounted",
		}},
		{&workerv1.BrokerStatus{Reachable: true, Probe: &brokerv1.ProbeResponse{
			Bpftrace: &brokerv1.BpftraceInfo{Found: true}, Tracefs: &brokerv1.TracefsInfo{Mounted: true}}}, map[string]string{}},
	}
	for i, c := range cases {
		got := map[string]string{}
		w.brokerProblems(c.b, func(fix, format string, a ...any) { got[fix] = fmt.Sprintf(format, a...) })
		if len(got) != len(c.want) {
			t.Errorf("case %d: problems %v, want %v", i, got, c.want)
		}
		for fix, what := range c.want {
			if !strings.Contains(got[fix], what) {
				t.Errorf("case %d: fix %q for %q, got %v", i, fix, what, got)
			}
		}
	}
}
