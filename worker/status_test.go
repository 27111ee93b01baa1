package worker

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

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
