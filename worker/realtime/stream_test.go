package realtime_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// The stream alone (the records API refuses every list) delivers creates
// to the handlers, once each.
func TestStreamEventsReachHandlers(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	e.fake.Fail(fakeapi.RouteRecords, http.StatusInternalServerError, 0, "")
	rec := newRecorder()
	r := e.start(e.config(e.openStore(t.TempDir()), rec), rec)
	e.waitSubscribed()

	inv := e.createInvestigation("High CPU usage on process mysqld")
	patch := e.createPatch("dry-run")
	reboot := e.createReboot(120)
	keys := []string{key(opstate.Investigation, inv), key(opstate.Patch, patch), key(opstate.Reboot, reboot)}
	rec.waitCalled(t, keys...)
	eventually(t, "outcomes recorded", func() bool { return r.rt.Stats().Done == 3 })
	rec.exactlyOnce(t, keys...)
	st := r.rt.Stats()
	if st.ClaimedStream != 3 || st.ClaimedCatchUp != 0 || st.Events < 3 || st.BadEvents != 0 {
		t.Errorf("stats %+v", st)
	}
	for _, k := range []struct {
		kind opstate.Kind
		id   string
	}{{opstate.Investigation, inv}, {opstate.Patch, patch}, {opstate.Reboot, reboot}} {
		if got := entry(t, r.store, k.kind, k.id); got.State != opstate.Done || got.Started.IsZero() || got.NotBefore.IsZero() {
			t.Errorf("entry %+v", got)
		}
	}
	// The reboot handler ran with the reboot's deadline.
	rec.mu.Lock()
	d := rec.deadlines[reboot]
	rec.mu.Unlock()
	if left := time.Until(d); left <= 0 || left > 120*time.Second {
		t.Errorf("reboot handler deadline %v away, want within requested_at + 120s", left)
	}
}

// The server closes the stream (idle close, or dropped); the worker
// connects again at once, subscribes its new clientId, and events sent
// only to that client arrive.
func TestEventsReachTheNewClientAfterAClose(t *testing.T) {
	tests := []struct {
		name  string
		idle  time.Duration
		close func(e *env)
	}{
		{"idle close", 700 * time.Millisecond, func(*env) {}},
		{"dropped", 0, func(e *env) { e.fake.DropStreams() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fakeapi.Options{IdleTimeout: tc.idle})
			e.fake.Fail(fakeapi.RouteRecords, http.StatusInternalServerError, 0, "")
			rec := newRecorder()
			r := e.start(e.config(e.openStore(t.TempDir()), rec), rec)
			first := e.waitSubscribed()
			tc.close(e)
			second := e.waitSubscribed(first)
			inv := e.createInvestigation("Disk latency spikes on /var")
			rec.waitCalled(t, key(opstate.Investigation, inv))
			rec.exactlyOnce(t, key(opstate.Investigation, inv))
			st := r.rt.Stats()
			if st.ClaimedStream != 1 || st.Subscribes < 2 {
				t.Errorf("stats %+v", st)
			}
			for _, c := range e.fake.Clients() {
				if c.ID == first {
					t.Errorf("the first client %s is still connected", first)
				}
			}
			if st.ClientID == first {
				t.Errorf("still on client %s, fake subscribed %s", st.ClientID, second)
			}
		})
	}
}

// The token is taken from the credentials for every connect and
// subscribe, so a refreshed token is used at the next reconnect.
func TestEveryConnectUsesTheCurrentToken(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	ctx := t.Context()
	fresh, err := e.client.Refresh(ctx, e.agent.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	e.creds.mu.Lock()
	// The first connect and subscribe (and the startup catch-up lists) get
	// the old token; everything after gets the refreshed one.
	e.creds.tokens = []string{e.agent.AccessToken, e.agent.AccessToken, e.agent.AccessToken, e.agent.AccessToken, e.agent.AccessToken, fresh.AccessToken}
	e.creds.mu.Unlock()
	rec := newRecorder()
	e.start(e.config(e.openStore(t.TempDir()), rec), rec)
	first := e.waitSubscribed()
	eventually(t, "the old token used up", func() bool {
		e.creds.mu.Lock()
		defer e.creds.mu.Unlock()
		return e.creds.calls >= 5
	})
	e.fake.DropStreams()
	e.waitSubscribed(first)
	var gets []string
	for _, req := range e.fake.Requests() {
		if req.Route == fakeapi.RouteRealtimeConnect || req.Route == fakeapi.RouteRealtimeSubscribe {
			gets = append(gets, req.Method+" "+req.Header.Get("Authorization"))
		}
	}
	last := gets[len(gets)-1]
	if last != "POST Bearer "+fresh.AccessToken {
		t.Fatalf("last subscribe used %q, want the refreshed token; requests %q", last, gets)
	}
	if gets[0] != "GET Bearer "+e.agent.AccessToken {
		t.Fatalf("first connect %q", gets[0])
	}
}

// A subscribe answered 204 that delivers nothing: the periodic catch-up
// still finds the work.
func TestSilentSubscriptionIsCaughtUp(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	rec := newRecorder()
	cfg := e.config(e.openStore(t.TempDir()), rec)
	cfg.CatchUpInterval = 150 * time.Millisecond
	r := e.start(cfg, rec)
	client := e.waitSubscribed()
	e.fake.StopDelivery(client)
	inv := e.createInvestigation("Memory leak in the java service")
	patch := e.createPatch("dry-run")
	rec.waitCalled(t, key(opstate.Investigation, inv), key(opstate.Patch, patch))
	rec.exactlyOnce(t, key(opstate.Investigation, inv), key(opstate.Patch, patch))
	if st := r.rt.Stats(); st.ClaimedCatchUp != 2 || st.ClaimedStream != 0 {
		t.Errorf("stats %+v", st)
	}
	for _, c := range e.fake.Clients() {
		if c.ID == client && c.Delivered != 0 {
			t.Errorf("the muted client got %d frames", c.Delivered)
		}
	}
}
