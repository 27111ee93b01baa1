package tokenstore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/tokenstore"
)

// env is a fake backend, a client, a store and a manager on one clock.
type env struct {
	clock *fakeapi.Clock
	srv   *fakeapi.Server
	api   *nannyapi.Client
	store *tokenstore.Store
	mgr   *tokenstore.Manager
	agent fakeapi.AgentCredentials
	dir   string
	logs  *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var t0 = time.Date(2026, 11, 25, 21, 40, 0, 0, time.UTC)

// newEnv registers an agent at t0 and stores its token as a device-flow
// registration would, with access expiry t0+1h (expires_in 3600).
func newEnv(t *testing.T, fopts fakeapi.Options, mopts tokenstore.Options) *env {
	t.Helper()
	e := &env{clock: fakeapi.NewClock(t0), logs: &syncBuffer{}}
	fopts.Now = e.clock.Now
	e.srv = fakeapi.New(fopts)
	t.Cleanup(e.srv.Close)
	var err error
	e.api, err = nannyapi.New(nannyapi.Config{BaseURL: e.srv.URL(), Version: "test",
		Retry: nannyapi.RetryPolicy{Attempts: 3, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.api.Close)
	e.agent = e.srv.AddAgent("", "peer-test-01", "debian")
	e.dir = filepath.Join(t.TempDir(), "state")
	if e.store, err = tokenstore.Open(filepath.Join(e.dir, "token.json")); err != nil {
		t.Fatal(err)
	}
	tok := tokenstore.TokenFromResponse(nannyapi.TokenResponse{AccessToken: e.agent.AccessToken, RefreshToken: e.agent.RefreshToken,
		ExpiresIn: 3600, AgentID: e.agent.ID}, t0)
	if err := e.store.Save(tok); err != nil {
		t.Fatal(err)
	}
	mopts.Now = e.clock.Now
	mopts.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if e.mgr, err = tokenstore.NewManager(e.store, e.api, mopts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logs := e.logs.String()
		if strings.Contains(logs, e.agent.AccessToken) || strings.Contains(logs, e.agent.RefreshToken) {
			t.Errorf("a token appears in the logs:\n%s", logs)
		}
	})
	return e
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestRefreshBeforeExpiryKeepsRefreshToken(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{})
	tok, err := e.mgr.Token(ctx(t))
	if err != nil || tok != e.agent.AccessToken || e.srv.Hits(fakeapi.RouteRefresh) != 0 {
		t.Fatalf("fresh token: %v hits %d", err, e.srv.Hits(fakeapi.RouteRefresh))
	}
	e.clock.Advance(56 * time.Minute) // inside the 5-minute window
	tok, err = e.mgr.Token(ctx(t))
	if err != nil || tok == e.agent.AccessToken || e.srv.Hits(fakeapi.RouteRefresh) != 1 {
		t.Fatalf("refresh: %v hits %d", err, e.srv.Hits(fakeapi.RouteRefresh))
	}
	stored, err := e.store.Load()
	if err != nil || stored.AccessToken != tok || stored.RefreshToken != e.agent.RefreshToken || !stored.ExpiresAt.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("stored %v %v (refresh_token \"\" must keep the old one)", stored, err)
	}
	raw, _ := os.ReadFile(filepath.Join(e.dir, ".refresh_token"))
	if string(raw) != e.agent.RefreshToken {
		t.Errorf(".refresh_token %q", raw)
	}
	if again, _ := e.mgr.Token(ctx(t)); again != tok || e.srv.Hits(fakeapi.RouteRefresh) != 1 {
		t.Errorf("refreshed twice")
	}
}

func TestRefreshOnceOn401(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{})
	agent := e.api.WithCredentials(e.mgr)
	e.srv.ExpireAccessTokens(e.agent.ID)
	if err := agent.IngestMetrics(ctx(t), metrics()); err != nil {
		t.Fatal(err)
	}
	if r, i := e.srv.Hits(fakeapi.RouteRefresh), e.srv.Hits(fakeapi.RouteIngestMetrics); r != 1 || i != 2 {
		t.Errorf("refresh hits %d ingest hits %d, want 1 and 2", r, i)
	}
}

func TestRejectedWithFailingRefreshGivesUp(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{})
	e.srv.ExpireAccessTokens(e.agent.ID)
	e.srv.Fail(fakeapi.RouteRefresh, 503, 0, "")
	err := e.api.WithCredentials(e.mgr).IngestMetrics(ctx(t), metrics())
	if nannyapi.StatusOf(err) != 401 || !strings.Contains(err.Error(), "503") {
		t.Errorf("err %v", err)
	}
	if n := e.srv.Hits(fakeapi.RouteIngestMetrics); n != 1 {
		t.Errorf("ingest sent %d times; the rejected token must not be replayed", n)
	}
}

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{})
	e.clock.Advance(2 * time.Hour)
	e.srv.Slow(fakeapi.RouteRefresh, 100*time.Millisecond)
	var wg sync.WaitGroup
	got := make([]string, 16)
	errs := make([]error, 16)
	for i := range got {
		wg.Go(func() { got[i], errs[i] = e.mgr.Token(ctx(t)) })
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i] != got[0] || got[i] == e.agent.AccessToken {
			t.Errorf("caller %d: %v", i, errs[i])
		}
	}
	if n := e.srv.Hits(fakeapi.RouteRefresh); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
}

func TestRefreshRejectedNeedsRegistration(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(e *env)
		reason string
	}{
		{"revoked", func(e *env) { e.srv.RevokeAgent(e.agent.ID) }, tokenstore.ReasonRevoked},
		{"expired", func(e *env) { e.srv.ExpireRefreshToken(e.agent.ID) }, tokenstore.ReasonExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fakeapi.Options{}, tokenstore.Options{})
			tc.break_(e)
			e.clock.Advance(2 * time.Hour)
			for range 3 {
				_, err := e.mgr.Token(ctx(t))
				var rr *tokenstore.RegistrationRequiredError
				if !errors.As(err, &rr) || rr.Reason != tc.reason || !errors.Is(err, tokenstore.ErrRegistrationRequired) {
					t.Fatalf("err %v", err)
				}
			}
			if n := e.srv.Hits(fakeapi.RouteRefresh); n != 1 {
				t.Errorf("%d refresh attempts, want 1 (no retry loop)", n)
			}
			st := e.mgr.Status()
			if st.State != tokenstore.StateRegistrationRequired || st.Reason != tc.reason {
				t.Errorf("status %+v", st)
			}
			if _, live := e.mgr.Registered(); live {
				t.Error("a dead registration counts as live")
			}
			// The client's 401 path ends the same way, without looping.
			err := e.api.WithCredentials(e.mgr).IngestMetrics(ctx(t), metrics())
			if !errors.Is(err, tokenstore.ErrRegistrationRequired) {
				t.Errorf("ingest: %v", err)
			}
		})
	}
}

func TestTransientRefreshFailureDoesNotHammer(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{RetryAfterFailure: 30 * time.Second})
	e.srv.Fail(fakeapi.RouteRefresh, 503, 0, "")
	e.clock.Advance(57 * time.Minute) // due, but still valid for 3 minutes
	for range 3 {
		tok, err := e.mgr.Token(ctx(t))
		if err != nil || tok != e.agent.AccessToken {
			t.Fatalf("a valid token must still be served: %v", err)
		}
	}
	if n := e.srv.Hits(fakeapi.RouteRefresh); n != 1 {
		t.Errorf("%d refresh attempts within RetryAfterFailure, want 1", n)
	}
	e.clock.Advance(4 * time.Minute) // now expired
	if _, err := e.mgr.Token(ctx(t)); err == nil {
		t.Fatal("an expired token with a failing refresh must fail")
	}
	if n := e.srv.Hits(fakeapi.RouteRefresh); n != 2 {
		t.Errorf("hits %d, want 2", n)
	}
	if _, err := e.mgr.Token(ctx(t)); err == nil || e.srv.Hits(fakeapi.RouteRefresh) != 2 {
		t.Errorf("throttled call went to the server: %v", err)
	}
	if st := e.mgr.Status(); st.State != tokenstore.StateRegistered {
		t.Errorf("a transient failure changed the state: %+v", st)
	}
	e.srv.ClearFaults()
	e.clock.Advance(31 * time.Second)
	if _, err := e.mgr.Token(ctx(t)); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestRenewUnsupportedIsRemembered(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{})
	e.clock.Advance(25 * 24 * time.Hour) // 5 days left: inside the 7-day window
	for range 2 {
		if err := e.mgr.Maintain(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.srv.Hits(fakeapi.RouteRenewRefreshToken); n != 1 {
		t.Errorf("renew asked %d times, want 1", n)
	}
	st := e.mgr.Status()
	if st.RenewSupport != tokenstore.RenewNotSupported || !st.RefreshTokenWarning || st.RefreshTokenDaysLeft != 5 {
		t.Errorf("status %+v", st)
	}
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "cannot renew") || !strings.Contains(st.Warnings[0], "in 5 days") {
		t.Errorf("warnings %q", st.Warnings)
	}
}

func TestRenewOnNewerBackend(t *testing.T) {
	e := newEnv(t, fakeapi.Options{RenewRefreshToken: true}, tokenstore.Options{})
	e.clock.Advance(24 * 24 * time.Hour)
	if err := e.mgr.Maintain(ctx(t)); err != nil {
		t.Fatal(err)
	}
	stored, _ := e.store.Load()
	if stored.RefreshToken == e.agent.RefreshToken || !stored.RefreshIssuedAt.Equal(e.clock.Now()) || stored.AgentID != e.agent.ID {
		t.Fatalf("stored %v", stored)
	}
	st := e.mgr.Status()
	if st.RenewSupport != tokenstore.RenewSupported || st.RefreshTokenWarning || st.RefreshTokenDaysLeft != 30 {
		t.Errorf("status %+v", st)
	}
	if _, err := e.api.Refresh(ctx(t), e.agent.RefreshToken); !nannyapi.HasMessage(err, 401, nannyapi.MsgInvalidRefreshToken) {
		t.Errorf("old refresh token still works: %v", err)
	}
	if err := e.mgr.Maintain(ctx(t)); err != nil || e.srv.Hits(fakeapi.RouteRenewRefreshToken) != 1 {
		t.Errorf("renewed again: %v", err)
	}
}

func TestRefreshTokenAgeWarning(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{WarnBefore: 7 * 24 * time.Hour})
	for _, step := range []struct {
		advance  time.Duration
		daysLeft int
		warn     bool
	}{
		{0, 30, false},
		{22 * 24 * time.Hour, 8, false},
		{36 * time.Hour, 6, true},
		{7 * 24 * time.Hour, -1, true}, // half a day past the expiry
	} {
		e.clock.Advance(step.advance)
		st := e.mgr.Status()
		if st.RefreshTokenDaysLeft != step.daysLeft || st.RefreshTokenWarning != step.warn || !st.RefreshTokenExpiresAt.Equal(t0.Add(30*24*time.Hour)) {
			t.Errorf("at %s: days %d warn %v", e.clock.Now(), st.RefreshTokenDaysLeft, st.RefreshTokenWarning)
		}
	}
}

func TestMigratedTokenAgeIsEstimated(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{})
	// Rewrite the file as the reference agent would: no "worker" key.
	writeFile(t, filepath.Join(e.dir, "token.json"), strings.NewReplacer(
		"6c4cc1db4825516cb3b36826c283a7a2", e.agent.RefreshToken).Replace(referenceFile), 0o600)
	if err := e.mgr.Reload(); err != nil {
		t.Fatal(err)
	}
	st := e.mgr.Status()
	if !st.RefreshTokenIssuedAtEstimated || !st.RefreshTokenIssuedAt.Equal(e.clock.Now()) {
		t.Errorf("status %+v", st)
	}
	if err := e.mgr.Maintain(ctx(t)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(e.dir, "token.json"))
	if !strings.Contains(string(data), `"refresh_token_issued_at_estimated": true`) {
		t.Errorf("estimate not persisted:\n%s", data)
	}
}

func TestRefreshFillsMissingAgentID(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{})
	_ = os.Remove(filepath.Join(e.dir, "token.json")) // only .refresh_token is left
	if err := e.mgr.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Token(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if e.mgr.AgentID() != e.agent.ID {
		t.Errorf("agent id %q", e.mgr.AgentID())
	}
	stored, _ := e.store.Load()
	if stored.AgentID != e.agent.ID || stored.AccessToken == "" {
		t.Errorf("stored %v", stored)
	}
}

func TestStatesWithoutToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	store, err := tokenstore.Open(filepath.Join(dir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := tokenstore.NewManager(store, nil, tokenstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st := mgr.Status(); st.State != tokenstore.StateNotRegistered {
		t.Errorf("status %+v", st)
	}
	if _, err := mgr.Token(ctx(t)); !errors.Is(err, tokenstore.ErrNotRegistered) {
		t.Errorf("token: %v", err)
	}
	if err := mgr.Install(ctx(t), tokenstore.StaticMarker("6ybfg6bq7mxtjoj", time.Now())); err != nil {
		t.Fatal(err)
	}
	if st := mgr.Status(); st.State != tokenstore.StateRegistered || st.Mode != tokenstore.ModeStatic {
		t.Errorf("static status %+v", st)
	}
	if _, err := mgr.Token(ctx(t)); !errors.Is(err, tokenstore.ErrStaticMode) {
		t.Errorf("static token: %v", err)
	}
	if err := mgr.Maintain(ctx(t)); err != nil {
		t.Errorf("maintain in static mode: %v", err)
	}
}

func metrics() nannyapi.MetricsReport {
	return nannyapi.MetricsReport{PlatformFamily: "debian", Version: "test",
		SystemMetrics: nannyapi.SystemMetrics{CPUPercent: 1, CPUCores: 2, MemoryPercent: 3, DiskUsagePercent: 4}}
}

func BenchmarkTokenFresh(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "state")
	store, err := tokenstore.Open(filepath.Join(dir, "token.json"))
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Save(sampleToken(time.Now())); err != nil {
		b.Fatal(err)
	}
	mgr, err := tokenstore.NewManager(store, nil, tokenstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := mgr.Token(c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The backend says expires_in 3600 but its JWT lives 7 days: status shows
// both, the claim as the token's real expiry.
func TestStatusShowsTheTokensOwnExpiry(t *testing.T) {
	e := newEnv(t, fakeapi.Options{}, tokenstore.Options{RefreshBefore: 5 * time.Minute})
	st := e.mgr.Status()
	if want := t0.Add(7 * 24 * time.Hour); !st.AccessTokenClaimExpiresAt.Equal(want) {
		t.Errorf("claim expiry %v, want %v (the JWT's exp)", st.AccessTokenClaimExpiresAt, want)
	}
	if !st.AccessTokenExpiresAt.Equal(t0.Add(time.Hour)) || !st.AccessTokenRefreshAt.Equal(t0.Add(55*time.Minute)) {
		t.Errorf("schedule: expires %v refresh %v", st.AccessTokenExpiresAt, st.AccessTokenRefreshAt)
	}
}
