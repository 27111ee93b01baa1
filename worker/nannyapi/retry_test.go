package nannyapi_test

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

func TestRetryRules(t *testing.T) {
	s := newFake(t, fakeapi.Options{})
	ag := s.AddAgent("", "a", "debian")
	ctx := ctxT(t)
	var retries atomic.Int32
	c := newClient(t, s.URL(), nannyapi.Config{OnRetry: func(string, int, error) { retries.Add(1) }}).
		WithCredentials(&bearer{token: ag.AccessToken})

	cases := []struct {
		name      string
		route     string
		status    int
		times     int
		call      func() error
		wantHits  int
		wantOK    bool
		wantState int
	}{
		{"idempotent 503 twice then ok", fakeapi.RouteIngestMetrics, 503, 2,
			func() error { return c.IngestMetrics(ctx, sampleMetrics()) }, 3, true, 0},
		{"idempotent 502 forever is bounded", fakeapi.RouteIngestMetrics, 502, 0,
			func() error { return c.IngestMetrics(ctx, sampleMetrics()) }, 3, false, 502},
		{"500 is not retried", fakeapi.RouteIngestMetrics, 500, 0,
			func() error { return c.IngestMetrics(ctx, sampleMetrics()) }, 1, false, 500},
		{"404 is not retried", fakeapi.RouteRecords, 404, 0,
			func() error { _, err := c.ListRebootOperations(ctx, nannyapi.RecordQuery{}); return err }, 1, false, 404},
		{"records GET 504 retried", fakeapi.RouteRecords, 504, 1,
			func() error { _, err := c.ListRebootOperations(ctx, nannyapi.RecordQuery{}); return err }, 2, true, 0},
		{"create that reached the server is not retried", fakeapi.RouteInvestigationCreate, 503, 1,
			func() error {
				_, err := c.CreateInvestigation(ctx, ag.ID, "Disk is filling up quickly", "high")
				return err
			}, 1, false, 503},
		{"ai turn that reached the server is not retried", fakeapi.RouteAITurn, 503, 1,
			func() error {
				_, err := c.AITurn(ctx, "8vdpgwejcaa7p3q", []nannyapi.ChatMessage{{Role: "user", Content: "x"}})
				return err
			}, 1, false, 503},
		{"refresh that reached the server is not retried", fakeapi.RouteRefresh, 503, 1,
			func() error { _, err := c.Refresh(ctx, ag.RefreshToken); return err }, 1, false, 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.ClearFaults()
			before := s.Hits(tc.route)
			s.Fail(tc.route, tc.status, tc.times, "")
			err := tc.call()
			s.ClearFaults()
			if (err == nil) != tc.wantOK || (err != nil && nannyapi.StatusOf(err) != tc.wantState) {
				t.Errorf("err %v", err)
			}
			if hits := s.Hits(tc.route) - before; hits != tc.wantHits {
				t.Errorf("hits %d, want %d", hits, tc.wantHits)
			}
		})
	}
	if recs, _ := c.ListInvestigations(ctx, nannyapi.RecordQuery{}); len(recs) != 0 {
		t.Errorf("a failed create left %d investigations", len(recs))
	}
	if retries.Load() == 0 {
		t.Error("OnRetry never called")
	}
}

// TestNonIdempotentRetriedOnlyBeforeSending: a create is retried after a
// refused connection (it never reached a server) and succeeds exactly once.
func TestNonIdempotentRetriedOnlyBeforeSending(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	var (
		mu  sync.Mutex
		srv *fakeapi.Server
	)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if srv != nil {
			srv.Close()
		}
	}()
	c := newClient(t, "http://"+addr, nannyapi.Config{OnRetry: func(string, int, error) {
		mu.Lock()
		defer mu.Unlock()
		if srv == nil {
			// The server comes up between the first and second attempt.
			var err error
			srv, err = fakeapi.Start(fakeapi.Options{Addr: addr})
			if err != nil {
				t.Errorf("start: %v", err)
			}
		}
	}})
	da, err := c.DeviceAuthStart(ctxT(t))
	if err != nil {
		t.Fatalf("device-auth-start after a refused connection: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if srv == nil || srv.Hits(fakeapi.RouteDeviceAuthStart) != 1 || da.UserCode == "" {
		t.Errorf("want exactly one start on the server")
	}
}

// TestNonIdempotentNotRetriedAfterConnect: a server that accepts and drops
// the connection may have seen the request; the create is not sent again.
func TestNonIdempotentNotRetriedAfterConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			buf := make([]byte, 4096)
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = conn.Read(buf)
			conn.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()
	c := newClient(t, "http://"+ln.Addr().String(), nannyapi.Config{}).WithCredentials(&bearer{token: "t0ken"})
	_, err = c.CreateInvestigation(ctxT(t), "6ybfg6bq7mxtjoj", "Disk is filling up quickly", "high")
	if err == nil {
		t.Fatal("want an error")
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("%d connections, want 1 (no resend)", n)
	}
	// An idempotent call to the same server is retried up to the bound.
	accepts.Store(0)
	if err := c.IngestMetrics(ctxT(t), sampleMetrics()); err == nil {
		t.Fatal("want an error")
	}
	if n := accepts.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

// TestAITurnHasItsOwnTimeout: an ordinary call times out at the short
// first-byte timeout; a slower AI turn succeeds under AITurnTimeout and a
// turn beyond it fails without being resent.
func TestAITurnHasItsOwnTimeout(t *testing.T) {
	s := newFake(t, fakeapi.Options{AI: fakeapi.NewScriptedAI("plain answer", "second")})
	ag := s.AddAgent("", "a", "debian")
	inv, _ := s.CreateInvestigation(ag.ID, "A slow model round", "low")
	ctx := ctxT(t)
	c := newClient(t, s.URL(), nannyapi.Config{ResponseHeaderTimeout: 100 * time.Millisecond, AITurnTimeout: 3 * time.Second,
		Retry: nannyapi.RetryPolicy{Attempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}}).
		WithCredentials(&bearer{token: ag.AccessToken})
	s.Slow(fakeapi.RouteAITurn, 400*time.Millisecond)
	s.Slow(fakeapi.RouteIngestMetrics, 400*time.Millisecond)
	turn, err := c.AITurn(ctx, inv, []nannyapi.ChatMessage{{Role: "user", Content: "x"}})
	if err != nil || turn.Content() != "plain answer" {
		t.Fatalf("slow AI turn: %+v %v", turn, err)
	}
	err = c.IngestMetrics(ctx, sampleMetrics())
	if !errors.Is(err, nannyapi.ErrHeaderTimeout) {
		t.Errorf("slow metrics: %v, want header timeout", err)
	}
	if hits := s.Hits(fakeapi.RouteIngestMetrics); hits != 2 {
		t.Errorf("metrics hits %d, want 2 (idempotent, retried once)", hits)
	}
	short := newClient(t, s.URL(), nannyapi.Config{AITurnTimeout: 150 * time.Millisecond}).WithCredentials(&bearer{token: ag.AccessToken})
	before := s.Hits(fakeapi.RouteAITurn)
	if _, err := short.AITurn(ctx, inv, []nannyapi.ChatMessage{{Role: "user", Content: "x"}}); err == nil {
		t.Error("want a timeout")
	}
	if hits := s.Hits(fakeapi.RouteAITurn) - before; hits != 1 {
		t.Errorf("a timed-out AI turn was sent %d times", hits)
	}
	s.ClearFaults()
}
