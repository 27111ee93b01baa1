package realtime_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/realtime"
)

// A worker stops mid-way with one investigation running and one queued;
// records are created while it is down; a new instance on the same state
// dir recovers the running one (reported failed, not run again), runs the
// queued one and the new ones, and runs nothing twice.
func TestRestartRecoversAndRunsNothingTwice(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	dir := t.TempDir()
	rec1 := newRecorder()
	cfg1 := e.config(e.openStore(dir), rec1)
	cfg1.InvestigationWorkers = 1
	r1 := e.start(cfg1, rec1)
	e.waitSubscribed()

	done1 := e.createInvestigation("Handled before the restart")
	patch1 := e.createPatch("dry-run")
	rec1.waitCalled(t, key(opstate.Investigation, done1), key(opstate.Patch, patch1))
	eventually(t, "first outcomes", func() bool { return r1.rt.Stats().Done == 2 })

	interrupted := e.createInvestigation("Running when the worker stops")
	rec1.blockOn(key(opstate.Investigation, interrupted))
	rec1.waitRunning(t, key(opstate.Investigation, interrupted))
	queued := e.createInvestigation("Queued when the worker stops")
	eventually(t, "the queued one recorded", func() bool {
		got, ok := r1.store.Get(opstate.Investigation, queued)
		return ok && got.State == opstate.Received
	})
	r1.stop()
	if n := rec1.count(key(opstate.Investigation, queued)); n != 0 {
		t.Fatalf("queued investigation ran %d times before the stop", n)
	}

	// While the worker is down.
	whileDown := []string{
		key(opstate.Investigation, e.createInvestigation("Created while the worker is down")),
		key(opstate.Patch, e.createPatch("dry-run")),
		key(opstate.Patch, e.createPatch("apply")),
		key(opstate.Reboot, e.createReboot(300)),
	}

	rec2 := newRecorder()
	r2 := e.start(e.config(e.openStore(dir), rec2), rec2)
	want := append([]string{key(opstate.Investigation, queued)}, whileDown...)
	rec2.waitCalled(t, want...)
	eventually(t, "second outcomes", func() bool { return r2.rt.Stats().Done == uint64(len(want)) })
	eventually(t, "the interrupted one reported failed", func() bool {
		for _, p := range e.fake.InvestigationPatches() {
			if p.ID == interrupted && p.Body["status"] == "failed" && p.Body["resolution_plan"] == realtime.ReasonInvestigationRestart {
				return true
			}
		}
		return false
	})
	time.Sleep(20 * time.Millisecond)
	rec2.exactlyOnce(t, want...)
	rec1.exactlyOnce(t, key(opstate.Investigation, done1), key(opstate.Patch, patch1), key(opstate.Investigation, interrupted))
	got := entry(t, r2.store, opstate.Investigation, interrupted)
	if got.State != opstate.Failed || got.Note != realtime.ReasonInvestigationRestart || got.Report != "" {
		t.Errorf("interrupted entry %+v", got)
	}
	if st := r2.rt.Stats(); st.Recovered != 1 || st.Reports != 1 {
		t.Errorf("stats %+v", st)
	}
	rec, _ := e.fake.Record("investigations", interrupted)
	if rec["status"] != "failed" {
		t.Errorf("backend record %v", rec)
	}
}

// recordingReporter records reports; failFirst makes the first n fail.
type recordingReporter struct {
	mu        sync.Mutex
	reports   []string
	failFirst int
}

func (r *recordingReporter) add(kind, id, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failFirst > 0 {
		r.failFirst--
		return errors.New("backend unreachable")
	}
	r.reports = append(r.reports, kind+"/"+id+": "+reason)
	return nil
}

func (r *recordingReporter) FailInvestigation(_ context.Context, id, reason string) error {
	return r.add("investigation", id, reason)
}

func (r *recordingReporter) FailPatch(_ context.Context, id, lxc, reason string) error {
	return r.add("patch", id+lxc, reason)
}

func (r *recordingReporter) FailReboot(_ context.Context, id, reason string) error {
	return r.add("reboot", id, reason)
}

func (r *recordingReporter) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(slices.Values(r.reports))
}

// patchRecovery answers by operation id.
type patchRecovery map[string]realtime.PatchRecoveryResult

func (p patchRecovery) RecoverPatch(_ context.Context, e opstate.Entry) (realtime.PatchRecoveryResult, error) {
	res, ok := p[e.ID]
	if !ok {
		return realtime.PatchRecoveryResult{}, errors.New("broker unreachable")
	}
	return res, nil
}

// Every kind of operation left running is resolved as the rules say, and
// none is handed to a handler again.
func TestRecoveryOutcomes(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	dir := t.TempDir()
	{
		s := e.openStore(dir)
		leave := func(kind opstate.Kind, id, lxc string, ack bool) {
			if _, _, err := s.Claim(kind, id, opstate.ClaimInfo{LXCID: lxc}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Start(kind, id); err != nil {
				t.Fatal(err)
			}
			if ack {
				if err := s.Acknowledge(id); err != nil {
					t.Fatal(err)
				}
			}
			s.Release(kind, id)
		}
		leave(opstate.Investigation, "inv1", "", false)
		leave(opstate.Patch, "pfinished", "", false)
		leave(opstate.Patch, "pfailed", "", false)
		leave(opstate.Patch, "pnever", "lxc1", false)
		leave(opstate.Patch, "pgoing", "", false)
		leave(opstate.Patch, "pbroker", "", false)
		leave(opstate.Reboot, "rnoack", "", false)
		leave(opstate.Reboot, "rlxc", "lxc2", true)
		_ = s.Close()
	}
	rep := &recordingReporter{failFirst: 1}
	rec := newRecorder()
	cfg := e.config(e.openStore(dir), rec)
	cfg.Reporter = rep
	cfg.CatchUpInterval = 50 * time.Millisecond
	cfg.PatchRecovery = patchRecovery{
		"pfinished": {Outcome: realtime.PatchFinished, Succeeded: true},
		"pfailed":   {Outcome: realtime.PatchFinished, Note: "exit 3"},
		"pnever":    {Outcome: realtime.PatchNeverStarted},
		"pgoing":    {Outcome: realtime.PatchStillRunning},
	}
	cfg.BootTime = func() (time.Time, error) { return time.Time{}, errors.New("no boot time needed here") }
	r := e.start(cfg, rec)
	want := map[string]opstate.State{
		"inv1": opstate.Failed, "pfinished": opstate.Done, "pfailed": opstate.Failed, "pnever": opstate.Failed,
		"pgoing": opstate.Running, "pbroker": opstate.Running, "rnoack": opstate.Failed, "rlxc": opstate.Failed,
	}
	eventually(t, "recovery and reports", func() bool { return r.rt.Stats().Recovered == 6 && len(rep.list()) == 3 })
	// Two more catch-ups: the unresolved ones stay running, nothing more.
	n := r.rt.Stats().CatchUps
	eventually(t, "two more catch-ups", func() bool { return r.rt.Stats().CatchUps >= n+2 })
	for _, got := range r.store.Entries() {
		if want[got.ID] != got.State {
			t.Errorf("%s: state %s, want %s (note %q)", got.ID, got.State, want[got.ID], got.Note)
		}
		if got.Report != "" {
			t.Errorf("%s: report %q still pending", got.ID, got.Report)
		}
	}
	wantReports := []string{
		"investigation/inv1: " + realtime.ReasonInvestigationRestart,
		"patch/pneverlxc1: " + realtime.ReasonPatchNeverStarted,
		"reboot/rnoack: " + realtime.ReasonRebootNotAcked,
	}
	if got := rep.list(); !slices.Equal(got, wantReports) {
		t.Errorf("reports\n got %q\nwant %q", got, wantReports)
	}
	if got := entry(t, r.store, opstate.Patch, "pfailed").Note; got != "exit 3" {
		t.Errorf("pfailed note %q", got)
	}
	if rec.total() != 0 {
		t.Errorf("a recovered operation was handed to a handler: %v", rec.snapshot())
	}
	if st := r.rt.Stats(); st.Recovered != 6 {
		t.Errorf("stats %+v", st)
	}
}

// A host reboot acknowledged before the restart is done if the host
// booted after the acknowledge, failed (and reported) otherwise.
func TestRecoveredRebootUsesTheBootTime(t *testing.T) {
	tests := []struct {
		name   string
		boot   time.Duration // relative to the acknowledge
		want   opstate.State
		report bool
	}{
		{"host rebooted", time.Minute, opstate.Done, false},
		{"host did not reboot", -time.Hour, opstate.Failed, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fakeapi.Options{})
			dir := t.TempDir()
			s := e.openStore(dir)
			if _, _, err := s.Claim(opstate.Reboot, "rb1", opstate.ClaimInfo{}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Start(opstate.Reboot, "rb1"); err != nil {
				t.Fatal(err)
			}
			if err := s.Acknowledge("rb1"); err != nil {
				t.Fatal(err)
			}
			ack := entry(t, s, opstate.Reboot, "rb1").Acknowledged
			s.Release(opstate.Reboot, "rb1")
			_ = s.Close()
			rep := &recordingReporter{}
			rec := newRecorder()
			cfg := e.config(e.openStore(dir), rec)
			cfg.Reporter = rep
			cfg.BootTime = func() (time.Time, error) { return ack.Add(tc.boot), nil }
			r := e.start(cfg, rec)
			eventually(t, "recovery", func() bool { return r.rt.Stats().Recovered == 1 })
			got := entry(t, r.store, opstate.Reboot, "rb1")
			if got.State != tc.want {
				t.Errorf("state %s (%s), want %s", got.State, got.Note, tc.want)
			}
			if tc.report {
				eventually(t, "the report", func() bool { return len(rep.list()) == 1 })
				if !strings.Contains(rep.list()[0], realtime.ReasonRebootNoBoot) {
					t.Errorf("report %q", rep.list())
				}
			} else if len(rep.list()) != 0 {
				t.Errorf("reported %q", rep.list())
			}
		})
	}
}

// steppedRecovery answers "still running" until done is closed.
type steppedRecovery struct {
	done  chan struct{}
	mu    sync.Mutex
	calls int
}

func (s *steppedRecovery) RecoverPatch(context.Context, opstate.Entry) (realtime.PatchRecoveryResult, error) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	select {
	case <-s.done:
		return realtime.PatchRecoveryResult{Outcome: realtime.PatchFinished, Succeeded: true, Note: "uploaded"}, nil
	default:
		return realtime.PatchRecoveryResult{Outcome: realtime.PatchStillRunning}, nil
	}
}

// A patch run still going after a restart is asked about again every
// RecoverInterval, not only at the (hourly, here) catch-ups, and is
// resolved once, when it has finished.
func TestStillRunningPatchAskedEveryRecoverInterval(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	dir := t.TempDir()
	{
		s := e.openStore(dir)
		if _, _, err := s.Claim(opstate.Patch, "pgoing", opstate.ClaimInfo{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Start(opstate.Patch, "pgoing"); err != nil {
			t.Fatal(err)
		}
		s.Release(opstate.Patch, "pgoing")
		_ = s.Close()
	}
	rec := newRecorder()
	cfg := e.config(e.openStore(dir), rec)
	steps := &steppedRecovery{done: make(chan struct{})}
	cfg.PatchRecovery = steps
	cfg.RecoverInterval = 20 * time.Millisecond
	r := e.start(cfg, rec)
	eventually(t, "several asks while it runs", func() bool {
		steps.mu.Lock()
		defer steps.mu.Unlock()
		return steps.calls >= 6 // more than the start and the catch-ups account for
	})
	if got := entry(t, r.store, opstate.Patch, "pgoing"); got.State != opstate.Running {
		t.Fatalf("resolved while still running: %+v", got)
	}
	close(steps.done)
	eventually(t, "resolved after it finished", func() bool { return entry(t, r.store, opstate.Patch, "pgoing").State == opstate.Done })
	steps.mu.Lock()
	n := steps.calls
	steps.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	steps.mu.Lock()
	defer steps.mu.Unlock()
	if steps.calls != n {
		t.Errorf("asked %d more times after it was resolved", steps.calls-n)
	}
	if c := r.rt.Stats().CatchUps; c > 3 {
		t.Errorf("%d catch-ups in a test whose catch-up interval is an hour", c)
	}
}
