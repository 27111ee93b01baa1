package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
)

// realtimePolicy lets the scripted model's commands run.
const realtimePolicy = `version: 1
commands:
  - {id: uptime, program: /usr/bin/uptime}
  - {id: "true", program: /usr/bin/true}
`

// turnsFor counts the AI turns of one investigation and how many of them
// were first turns (a second first turn means it ran twice).
func turnsFor(srv *fakeapi.Server, id string) (turns, firsts int) {
	for _, tr := range srv.AITurns() {
		if tr.InvestigationID != id {
			continue
		}
		turns++
		if len(tr.Messages) == 1 {
			firsts++
		}
	}
	return turns, firsts
}

func waitStatus(t *testing.T, srv *fakeapi.Server, id, status string) {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		if rec, ok := srv.Record("investigations", id); ok && rec["status"] == status {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec, _ := srv.Record("investigations", id)
	t.Fatalf("investigation %s did not reach %q: %v", id, status, rec)
}

func registeredStack(t *testing.T, srv *fakeapi.Server, policy string, extraWorkerArgs ...string) (*stack.Stack, fakeapi.AgentCredentials) {
	t.Helper()
	creds := srv.AddAgent("", "rt-host", "debian")
	s := startStack(t, stack.Options{APIURL: srv.URL(), Policy: policy, ExtraWorkerArgs: append(append([]string(nil), fastWorker...), extraWorkerArgs...),
		BeforeWorker: referenceToken(creds, false)})
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer cancel()
	if _, err := srv.WaitSubscribed(ctx, creds.ID, "investigations"); err != nil {
		t.Fatalf("the worker did not subscribe: %v\n%s", err, s.WorkerProcess().Log())
	}
	return s, creds
}

func TestPortalInvestigationRunsOnce(t *testing.T) {
	ai := fakeapi.NewScriptedAI(fakeapi.Diagnostic("load first", "uptime"), fakeapi.Resolution("idle host", "1. nothing to do"))
	srv := startFake(t, fakeapi.Options{AI: ai})
	s, creds := registeredStack(t, srv, realtimePolicy)
	other := srv.AddAgent("", "other-host", "debian")

	id, err := srv.CreateInvestigation(creds.ID, "the host feels slow today", "high")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := srv.CreateInvestigation(other.ID, "another agent's problem here", "low")
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, srv, id, "completed")
	turns, firsts := turnsFor(srv, id)
	if turns != 2 || firsts != 1 {
		t.Errorf("investigation ran %d turns with %d first turns; want 2 and 1", turns, firsts)
	}
	// The second turn carried the command's real output.
	for _, tr := range srv.AITurns() {
		if tr.InvestigationID == id && tr.Round == 2 && !strings.Contains(tr.Messages[2].Content, "load average") {
			t.Errorf("second turn lacks uptime's output: %s", tr.Messages[2].Content)
		}
	}
	if n, _ := turnsFor(srv, foreign); n != 0 {
		t.Errorf("another agent's investigation was run (%d turns)", n)
	}
	// The worker's own investigation (the CLI's) comes back on the stream
	// as a create; it must not run a second time.
	res := s.CLI(ctxT(t), nil, "diagnose", "the disk might be full here")
	if res.Code != 0 || !strings.Contains(res.Stdout, "DIAGNOSIS COMPLETE") {
		t.Fatalf("diagnose exit %d: %s%s", res.Code, res.Stdout, res.Stderr)
	}
	var own string
	for _, tr := range srv.AITurns() {
		if tr.InvestigationID != id && tr.InvestigationID != foreign {
			own = tr.InvestigationID
		}
	}
	time.Sleep(500 * time.Millisecond) // give a duplicate run the time to show
	if turns, firsts := turnsFor(srv, own); turns != 2 || firsts != 1 {
		t.Errorf("own investigation %s: %d turns, %d first turns; want 2 and 1", own, turns, firsts)
	}
}

func TestWorkerKilledMidInvestigation(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	ai := fakeapi.AIFunc(func(ctx context.Context, tr fakeapi.AITurn) (string, error) {
		if strings.Contains(tr.Messages[0].Content, "will be interrupted") {
			started <- struct{}{}
			select { // hold the first turn until the worker is killed
			case <-release:
			case <-ctx.Done():
			}
			return fakeapi.Resolution("late", "1. late"), nil
		}
		return fakeapi.Resolution("quick", "1. done"), nil
	})
	srv := startFake(t, fakeapi.Options{AI: ai})
	s, creds := registeredStack(t, srv, realtimePolicy)

	slowID, err := srv.CreateInvestigation(creds.ID, "this one will be interrupted", "high")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(9 * time.Second):
		t.Fatalf("the investigation never reached the model\n%s", s.WorkerProcess().Log())
	}
	s.KillWorker()
	close(release)
	// Work created while the worker is down is caught up after restart.
	missed, err := srv.CreateInvestigation(creds.ID, "created while the worker was down", "medium")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartWorker(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, srv, missed, "completed")
	waitStatus(t, srv, slowID, "failed")
	if turns, _ := turnsFor(srv, slowID); turns != 1 {
		t.Errorf("the interrupted investigation ran again after the restart: %d turns", turns)
	}
	if turns, _ := turnsFor(srv, missed); turns != 1 {
		t.Errorf("the missed investigation ran %d times", turns)
	}
	rec, _ := srv.Record("investigations", slowID)
	if plan, _ := rec["resolution_plan"].(string); !strings.Contains(plan, "restart") {
		t.Errorf("the failure reason does not say why: %q", plan)
	}
}
