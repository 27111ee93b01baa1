package realtime_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// outage drops the stream and refuses reconnects until the returned
// function is called (the production "2 minutes" of the issue, simulated by
// refusing connects while records are created).
func (e *env) outage(rt interface{ Subscribed() bool }) (end func()) {
	e.t.Helper()
	e.fake.Fail(fakeapi.RouteRealtimeConnect, http.StatusServiceUnavailable, 0, "")
	before := e.fake.Hits(fakeapi.RouteRealtimeConnect)
	e.fake.DropStreams()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	// At least two refused reconnects: the worker is really cut off.
	if err := e.fake.WaitHits(ctx, fakeapi.RouteRealtimeConnect, before+2); err != nil {
		e.t.Fatal(err)
	}
	if rt.Subscribed() {
		e.t.Fatal("still subscribed during the outage")
	}
	return e.fake.ClearFaults
}

type subscribedFunc func() bool

func (f subscribedFunc) Subscribed() bool { return f() }

// The stream is down while 3 investigations, 2 patches and 1 reboot are
// created: after the reconnect, the catch-up hands each to its handler
// exactly once, and later catch-ups do not run them again.
func TestOutageIsCaughtUpAfterReconnect(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	rec := newRecorder()
	r := e.start(e.config(e.openStore(t.TempDir()), rec), rec)
	first := e.waitSubscribed()
	eventually(t, "the first catch-up", func() bool { return r.rt.Stats().CatchUps >= 1 })

	// The records API is down too (the backend as a whole): a catch-up
	// kicked by the last subscribe may still be on its way, and it would
	// find the records created during the outage. end clears both.
	e.fake.Fail(fakeapi.RouteRecords, http.StatusServiceUnavailable, 0, "")
	end := e.outage(subscribedFunc(func() bool { return r.rt.Stats().Subscribed }))
	keys := []string{
		key(opstate.Investigation, e.createInvestigation("Nginx returns 502 errors")),
		key(opstate.Investigation, e.createInvestigation("Postgres replication lag")),
		key(opstate.Investigation, e.createInvestigation("Load average above 40")),
		key(opstate.Patch, e.createPatch("dry-run")),
		key(opstate.Patch, e.createPatch("apply")),
		key(opstate.Reboot, e.createReboot(300)),
	}
	time.Sleep(100 * time.Millisecond)
	if n := rec.total(); n != 0 {
		t.Fatalf("%d operations handled during the outage: the outage is not real", n)
	}
	ended := time.Now()
	end()
	e.waitSubscribed(first)
	// Status shows when the stream went down and when it came back.
	eventually(t, "the connection times", func() bool {
		st := r.rt.Stats()
		return st.Subscribed && st.SubscribedAt.After(ended) && !st.DisconnectedAt.IsZero() && st.DisconnectedAt.Before(ended)
	})
	rec.waitCalled(t, keys...)
	t.Logf("catch-up latency after the reconnect was allowed: %v", time.Since(ended).Round(time.Millisecond))
	eventually(t, "all outcomes recorded", func() bool { return r.rt.Stats().Done == 6 })
	rec.exactlyOnce(t, keys...)
	if st := r.rt.Stats(); st.ClaimedCatchUp != 6 || st.StreamErrors < 2 {
		t.Errorf("stats %+v", st)
	}

	// Another reconnect and its catch-up: the fake still lists nothing
	// open (the recorder does not report outcomes), so every record is
	// offered again and refused as already handled.
	dups := r.rt.Stats().Duplicates
	second := e.waitSubscribed(first)
	e.fake.DropStreams()
	e.waitSubscribed(first, second)
	eventually(t, "a catch-up refusing the handled ids", func() bool { return r.rt.Stats().Duplicates >= dups+6 })
	rec.exactlyOnce(t, keys...)
}

// The catch-up and the stream race on the same records: each runs once.
func TestStreamAndCatchUpRaceRunOnce(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	rec := newRecorder()
	cfg := e.config(e.openStore(t.TempDir()), rec)
	cfg.CatchUpInterval = 5 * time.Millisecond
	r := e.start(cfg, rec)
	e.waitSubscribed()
	var keys []string
	for range 10 {
		keys = append(keys, key(opstate.Investigation, e.createInvestigation("Intermittent packet loss on eth0")))
		keys = append(keys, key(opstate.Patch, e.createPatch("dry-run")))
	}
	rec.waitCalled(t, keys...)
	eventually(t, "all outcomes recorded", func() bool { return r.rt.Stats().Done == 20 })
	time.Sleep(50 * time.Millisecond) // several more catch-ups
	rec.exactlyOnce(t, keys...)
	st := r.rt.Stats()
	if st.ClaimedStream+st.ClaimedCatchUp != 20 || st.Duplicates == 0 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("claimed by the stream %d, by catch-ups %d, duplicates refused %d", st.ClaimedStream, st.ClaimedCatchUp, st.Duplicates)
}

// A full queue loses nothing: the claim is released and a later catch-up
// takes the operation.
func TestFullQueueLosesNothing(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	rec := newRecorder()
	cfg := e.config(e.openStore(t.TempDir()), rec)
	cfg.InvestigationWorkers, cfg.QueueSize = 1, 1
	cfg.CatchUpInterval = 100 * time.Millisecond
	r := e.start(cfg, rec)
	e.waitSubscribed()
	firstID := e.createInvestigation("First: blocks the only worker")
	release := rec.blockOn(key(opstate.Investigation, firstID))
	rec.waitRunning(t, key(opstate.Investigation, firstID))
	keys := []string{key(opstate.Investigation, firstID)}
	for range 3 {
		keys = append(keys, key(opstate.Investigation, e.createInvestigation("Queued behind the first one")))
	}
	eventually(t, "a full queue", func() bool { return r.rt.Stats().QueueFull > 0 })
	close(release)
	rec.waitCalled(t, keys...)
	eventually(t, "all outcomes recorded", func() bool { return r.rt.Stats().Done == 4 })
	rec.exactlyOnce(t, keys...)
}

// An update that moves a queued operation on (completed elsewhere)
// keeps it from starting.
func TestUpdateStopsAQueuedOperation(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	rec := newRecorder()
	cfg := e.config(e.openStore(t.TempDir()), rec)
	cfg.InvestigationWorkers = 1
	r := e.start(cfg, rec)
	e.waitSubscribed()
	busy := e.createInvestigation("Keeps the only worker busy")
	release := rec.blockOn(key(opstate.Investigation, busy))
	rec.waitRunning(t, key(opstate.Investigation, busy))
	queued := e.createInvestigation("Will be completed elsewhere")
	eventually(t, "the second investigation queued", func() bool {
		got, ok := r.store.Get(opstate.Investigation, queued)
		return ok && got.State == opstate.Received
	})
	if err := e.client.UpdateInvestigation(t.Context(), queued, nannyapi.InvestigationUpdate{Status: nannyapi.StatusCompleted, ResolutionPlan: "1. Fixed elsewhere."}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the queued investigation skipped", func() bool {
		return entry(t, r.store, opstate.Investigation, queued).State == opstate.Skipped
	})
	close(release)
	eventually(t, "the busy one done", func() bool { return r.rt.Stats().Done == 1 })
	time.Sleep(20 * time.Millisecond)
	rec.exactlyOnce(t, key(opstate.Investigation, busy))
	if got := entry(t, r.store, opstate.Investigation, queued); got.Note == "" || got.Report != "" {
		t.Errorf("skipped entry %+v: want a note and nothing to report (the backend moved it on)", got)
	}
}
