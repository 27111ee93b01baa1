package realtime_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/realtime"
)

// A reboot whose requested_at + timeout_seconds has passed is not run,
// whether the stream or a catch-up brings it; it is reported where the
// backend can take it (the /fail route of newer backends) and otherwise
// only logged.
func TestRebootPastItsDeadlineIsNotRun(t *testing.T) {
	tests := []struct {
		name       string
		rebootFail bool
		viaStream  bool
	}{
		{"catch-up, observed backend (no /fail)", false, false},
		{"stream, newer backend with /fail", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := fakeapi.NewClock(time.Now().Add(-time.Hour))
			e := newEnv(t, fakeapi.Options{Now: clock.Now, RebootFail: tc.rebootFail})
			var stale string
			if !tc.viaStream {
				stale = e.createReboot(120)
			}
			rec := newRecorder()
			r := e.start(e.config(e.openStore(t.TempDir()), rec), rec)
			e.waitSubscribed()
			if tc.viaStream {
				stale = e.createReboot(120) // requested an hour ago by the server's clock
			}
			eventually(t, "the reboot judged", func() bool {
				got, ok := r.store.Get(opstate.Reboot, stale)
				return ok && got.State == opstate.Skipped && got.Report == ""
			})
			got := entry(t, r.store, opstate.Reboot, stale)
			if !strings.Contains(got.Note, "deadline") {
				t.Errorf("note %q", got.Note)
			}
			if rec.total() != 0 {
				t.Fatalf("handled: %v", rec.snapshot())
			}
			if tc.rebootFail {
				if fails := e.fake.RebootFails(); len(fails) != 1 || !strings.Contains(fails[0].Body, "deadline") {
					t.Errorf("fail reports %+v", fails)
				}
			} else {
				found := false
				for _, req := range e.fake.Requests() {
					found = found || req.Path == "/api/reboot/"+stale+"/fail"
				}
				if !found {
					t.Error("the report was not even tried")
				}
			}

			// A fresh reboot (after the backend timed the stale one out) runs.
			if err := e.fake.TimeoutReboot(stale); err != nil && !tc.rebootFail {
				t.Fatal(err)
			}
			clock.Advance(time.Hour)
			fresh := e.createReboot(120)
			rec.waitCalled(t, key(opstate.Reboot, fresh))
			rec.exactlyOnce(t, key(opstate.Reboot, fresh))
		})
	}
}

// On a fresh install (no catch-up recorded), the backlog's age is unknown:
// patch apply is not run and is reported failed; investigations and
// dry-runs run. An apply created while connected runs.
func TestApplyFromAFreshInstallBacklogIsNotRun(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	oldApply := e.createPatch("apply")
	oldDry := e.createPatch("dry-run")
	oldInv := e.createInvestigation("Pending since before the install")
	rec := newRecorder()
	r := e.start(e.config(e.openStore(t.TempDir()), rec), rec)
	rec.waitCalled(t, key(opstate.Patch, oldDry), key(opstate.Investigation, oldInv))
	eventually(t, "the apply reported failed", func() bool { return len(e.fake.PatchResults()) == 1 })
	res := e.fake.PatchResults()[0]
	if res.OperationID != oldApply || res.Fields["exit_code"][0] != "1" || !strings.Contains(string(res.Stderr), "age is unknown") {
		t.Errorf("result upload %+v stderr %q", res, res.Stderr)
	}
	if backend, _ := e.fake.Record("patch_operations", oldApply); backend["status"] != "failed" {
		t.Errorf("backend record %v", backend)
	}
	e.waitSubscribed()
	eventually(t, "a catch-up recorded", func() bool { return !r.rt.Stats().LastCatchUp.IsZero() })
	newApply := e.createPatch("apply")
	rec.waitCalled(t, key(opstate.Patch, newApply))
	rec.exactlyOnce(t, key(opstate.Patch, oldDry), key(opstate.Investigation, oldInv), key(opstate.Patch, newApply))
}

// After a long outage (the last catch-up 3 days ago) an apply found by the
// catch-up may be that old: not run. MaxApplyAge decides.
func TestApplyAfterALongOutageIsNotRun(t *testing.T) {
	tests := []struct {
		name        string
		markKind    opstate.Kind
		maxApplyAge time.Duration
		run         bool
		why         string
	}{
		{"default 24h", opstate.Patch, 0, false, "longer than the 24h0m0s allowed"},
		{"allowed 4 days", opstate.Patch, 96 * time.Hour, true, ""},
		// Patches were never listed (no handler before an upgrade): the
		// investigations' mark says nothing about them.
		{"patches never caught up", opstate.Investigation, 96 * time.Hour, false, "age is unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fakeapi.Options{})
			dir := t.TempDir()
			s := e.openStore(dir)
			if err := s.SetLastCatchUp(tc.markKind, time.Now().Add(-72*time.Hour)); err != nil {
				t.Fatal(err)
			}
			apply := e.createPatch("apply")
			rec := newRecorder()
			cfg := e.config(s, rec)
			cfg.MaxApplyAge = tc.maxApplyAge
			r := e.start(cfg, rec)
			eventually(t, "the apply judged", func() bool {
				got, ok := r.store.Get(opstate.Patch, apply)
				return ok && got.State.Final()
			})
			got := entry(t, r.store, opstate.Patch, apply)
			if tc.run {
				rec.exactlyOnce(t, key(opstate.Patch, apply))
				if got.State != opstate.Done {
					t.Errorf("entry %+v", got)
				}
				return
			}
			if rec.total() != 0 || got.State != opstate.Skipped || !strings.Contains(got.Note, tc.why) {
				t.Errorf("entry %+v, calls %v", got, rec.snapshot())
			}
		})
	}
}

// A corrupt state file: the worker goes on with investigations and
// dry-runs but refuses patch apply and reboots until the operator removes
// the set-aside file.
func TestDegradedRecordRefusesApplyAndReboot(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, opstate.FileName), []byte(`{"version":1,"entries":[{`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := e.openStore(dir)
	degraded := s.Degraded()
	var ce *opstate.CorruptError
	if !errors.As(degraded, &ce) {
		t.Fatalf("degraded %v", degraded)
	}
	rec := newRecorder()
	r := e.start(e.config(s, rec), rec)
	e.waitSubscribed()
	inv := e.createInvestigation("Investigations still run")
	dry := e.createPatch("dry-run")
	apply := e.createPatch("apply")
	reboot := e.createReboot(300)
	rec.waitCalled(t, key(opstate.Investigation, inv), key(opstate.Patch, dry))
	for _, k := range []struct {
		kind opstate.Kind
		id   string
	}{{opstate.Patch, apply}, {opstate.Reboot, reboot}} {
		eventually(t, "refusal of "+k.id, func() bool {
			got, ok := r.store.Get(k.kind, k.id)
			return ok && got.State == opstate.Skipped && strings.Contains(got.Note, "degraded")
		})
	}
	rec.exactlyOnce(t, key(opstate.Investigation, inv), key(opstate.Patch, dry))

	// The operator reviewed the file and removed it: apply runs again.
	if err := os.Remove(ce.Path); err != nil {
		t.Fatal(err)
	}
	apply2 := e.createPatch("apply")
	rec.waitCalled(t, key(opstate.Patch, apply2))
}

// listingAPI changes what the records API lists: metadata dropped (as the
// backend's GET answers do), records of another agent added (a hostile or
// broken backend).
type listingAPI struct {
	realtime.API
	stripMetadata bool
	foreign       string
}

func (l listingAPI) ListInvestigations(ctx context.Context, q nannyapi.RecordQuery) ([]nannyapi.Investigation, error) {
	got, err := l.API.ListInvestigations(ctx, q)
	if l.stripMetadata {
		for i := range got {
			got[i].Metadata = nannyapi.Metadata{}
		}
	}
	if l.foreign != "" {
		got = append(got, nannyapi.Investigation{ID: "foreigninv00001", AgentID: l.foreign, Status: "pending", UserPrompt: "not ours"})
	}
	return got, err
}

func (l listingAPI) ListPatchOperations(ctx context.Context, q nannyapi.RecordQuery) ([]nannyapi.PatchOperation, error) {
	got, err := l.API.ListPatchOperations(ctx, q)
	if l.foreign != "" {
		got = append(got, nannyapi.PatchOperation{ID: "foreignpatch001", AgentID: l.foreign, Status: "pending", Mode: "dry-run"})
	}
	return got, err
}

func (l listingAPI) ListRebootOperations(ctx context.Context, q nannyapi.RecordQuery) ([]nannyapi.RebootOperation, error) {
	got, err := l.API.ListRebootOperations(ctx, q)
	if l.foreign != "" {
		got = append(got, nannyapi.RebootOperation{ID: "foreignboot0001", AgentID: l.foreign, Status: "sent",
			RequestedAt: time.Now().UTC().Format("2006-01-02 15:04:05.000Z"), TimeoutSeconds: 300})
	}
	return got, err
}

// Records of another agent are never run.
func TestRecordsOfAnotherAgentAreIgnored(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	rec := newRecorder()
	cfg := e.config(e.openStore(t.TempDir()), rec)
	cfg.API = listingAPI{API: e.client, foreign: e.other.ID}
	cfg.CatchUpInterval = 20 * time.Millisecond
	r := e.start(cfg, rec)
	e.waitSubscribed()
	// The other agent's own records, created by the same user.
	if _, err := e.fake.CreateInvestigation(e.other.ID, "Other agent's investigation", "high"); err != nil {
		t.Fatal(err)
	}
	mine := e.createInvestigation("Mine")
	rec.waitCalled(t, key(opstate.Investigation, mine))
	eventually(t, "several catch-ups", func() bool { return r.rt.Stats().Foreign >= 9 })
	rec.exactlyOnce(t, key(opstate.Investigation, mine))
	for _, got := range r.store.Entries() {
		if strings.HasPrefix(got.ID, "foreign") {
			t.Errorf("foreign record recorded: %+v", got)
		}
	}
}

// The worker's own investigations are never run: the stream's echo says
// initiated_by "agent"; the records API does not, so the ids it records
// decide, and catch-ups wait while a create is in flight.
func TestOwnInvestigationsAreNotRun(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	rec := newRecorder()
	cfg := e.config(e.openStore(t.TempDir()), rec)
	cfg.API = listingAPI{API: e.client, stripMetadata: true}
	cfg.CatchUpInterval = 20 * time.Millisecond
	r := e.start(cfg, rec)
	e.waitSubscribed()
	ctx := t.Context()

	// 1. Echo on the stream (metadata intact there).
	echoed, err := e.client.CreateInvestigation(ctx, e.agent.ID, "Created by the CLI, echoed", "medium")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the echo recorded as own", func() bool { return r.store.Own(echoed.ID) })

	// 2. Stream down: only catch-ups (without metadata) see it; the
	// recorded id keeps it from running.
	end := e.outage(subscribedFunc(func() bool { return r.rt.Stats().Subscribed }))
	done := r.rt.BeginOwnInvestigation()
	// A user's investigation created meanwhile waits while the create is
	// in flight…
	user := e.createInvestigation("From the portal during the create")
	created, err := e.client.CreateInvestigation(ctx, e.agent.ID, "Created by the CLI, stream down", "medium")
	if err != nil {
		t.Fatal(err)
	}
	n := r.rt.Stats().CatchUps
	eventually(t, "catch-ups during the create", func() bool { return r.rt.Stats().CatchUps >= n+3 })
	if rec.total() != 0 {
		t.Fatalf("ran during an own create: %v", rec.snapshot())
	}
	if err := done(created.ID); err != nil {
		t.Fatal(err)
	}
	// …and runs once the create returned.
	rec.waitCalled(t, key(opstate.Investigation, user))
	n = r.rt.Stats().CatchUps
	eventually(t, "more catch-ups", func() bool { return r.rt.Stats().CatchUps >= n+3 })
	end()
	e.waitSubscribed()
	rec.exactlyOnce(t, key(opstate.Investigation, user))
	for _, id := range []string{echoed.ID, created.ID} {
		if got := entry(t, r.store, opstate.Investigation, id); !got.Own || got.State != opstate.Skipped {
			t.Errorf("own entry %+v", got)
		}
	}
	if r.rt.Stats().Own == 0 {
		t.Error("no own investigation counted")
	}
	// RecordOwnInvestigation alone also works.
	if err := r.rt.RecordOwnInvestigation("ownbyhand00001"); err != nil || !r.store.Own("ownbyhand00001") {
		t.Errorf("RecordOwnInvestigation: %v", err)
	}
}

// A handler error or panic is recorded as failed and the worker goes on.
func TestHandlerErrorsAndPanicsAreRecorded(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	e.fake.Fail(fakeapi.RouteRecords, http.StatusBadGateway, 0, "")
	rec := newRecorder()
	cfg := e.config(e.openStore(t.TempDir()), rec)
	cfg.Patches = panicky{}
	r := e.start(cfg, rec)
	e.waitSubscribed()
	bad := e.createInvestigation("Handler returns an error")
	rec.mu.Lock()
	rec.fail[key(opstate.Investigation, bad)] = errors.New("ai turn failed: 400")
	rec.mu.Unlock()
	patch := e.createPatch("dry-run")
	good := e.createInvestigation("Handler succeeds")
	rec.waitCalled(t, key(opstate.Investigation, good))
	eventually(t, "outcomes", func() bool { st := r.rt.Stats(); return st.Failed == 2 && st.Done == 1 })
	if got := entry(t, r.store, opstate.Investigation, bad); got.State != opstate.Failed || got.Note != "ai turn failed: 400" {
		t.Errorf("entry %+v", got)
	}
	if got := entry(t, r.store, opstate.Patch, patch); got.State != opstate.Failed || !strings.Contains(got.Note, "panicked") {
		t.Errorf("entry %+v", got)
	}
}

type panicky struct{}

func (panicky) HandlePatch(context.Context, nannyapi.PatchOperation) error { panic("boom") }
