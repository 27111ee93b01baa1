package registration_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/registration"
	"github.com/nannyai/nannyagent/worker/tokenstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	srv   *fakeapi.Server
	api   *nannyapi.Client
	store *tokenstore.Store
	mgr   *tokenstore.Manager
	reg   *registration.Registrar
}

func newEnv(t *testing.T, opts fakeapi.Options) *env {
	t.Helper()
	e := &env{srv: fakeapi.New(opts)}
	t.Cleanup(e.srv.Close)
	var err error
	e.api, err = nannyapi.New(nannyapi.Config{BaseURL: e.srv.URL(), Version: "0.9.0",
		Retry: nannyapi.RetryPolicy{Attempts: 2, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.api.Close)
	if e.store, err = tokenstore.Open(filepath.Join(t.TempDir(), "state", "token.json")); err != nil {
		t.Fatal(err)
	}
	if e.mgr, err = tokenstore.NewManager(e.store, e.api, tokenstore.Options{}); err != nil {
		t.Fatal(err)
	}
	e.reg = registration.New(e.api, e.mgr)
	return e
}

func host() nannyapi.HostMetadata {
	return nannyapi.HostMetadata{Hostname: "peer-test-01", OSInfo: "Ubuntu 22.04.3 LTS", OSVersion: "22.04",
		Version: "0.9.0", KernelVersion: "5.15.0-91-generic", Arch: "amd64", PrimaryIP: "192.168.1.100",
		AllIPs: []string{"192.168.1.100", "10.0.0.5"}}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestDeviceFlowAutoApprove(t *testing.T) {
	e := newEnv(t, fakeapi.Options{AutoApprove: true, FrontendURL: "https://portal.example"})
	var codes []registration.DeviceCode
	res, err := e.reg.DeviceFlow(ctx(t), registration.DeviceFlowOptions{Host: host(), PollInterval: 10 * time.Millisecond,
		OnDeviceCode: func(c registration.DeviceCode) { codes = append(codes, c) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 1 || len(codes[0].UserCode) != 8 || codes[0].ExpiresIn != 10*time.Minute ||
		codes[0].VerificationURI != "https://portal.example/agent/authorize?user_code="+codes[0].UserCode {
		t.Errorf("device code %+v", codes)
	}
	if res.Mode != registration.ModeOAuth || res.AgentID == "" {
		t.Errorf("result %+v", res)
	}
	regs := e.srv.Registrations()
	if len(regs) != 1 {
		t.Fatalf("registrations %v", regs)
	}
	for k, want := range map[string]any{"hostname": "peer-test-01", "os_type": "linux", "os_info": "Ubuntu 22.04.3 LTS",
		"os_version": "22.04", "platform_family": "debian", "version": "0.9.0", "kernel_version": "5.15.0-91-generic",
		"arch": "amd64", "primary_ip": "192.168.1.100"} {
		if regs[0].Body[k] != want {
			t.Errorf("%s = %v, want %v", k, regs[0].Body[k], want)
		}
	}
	if ips, _ := regs[0].Body["all_ips"].([]any); len(ips) != 2 {
		t.Errorf("all_ips %v", regs[0].Body["all_ips"])
	}
	tok, err := e.store.Load()
	if err != nil || tok.AgentID != res.AgentID || tok.RefreshToken == "" || tok.RefreshIssuedAt.IsZero() {
		t.Errorf("stored %v %v", tok, err)
	}
	if st := e.mgr.Status(); st.State != tokenstore.StateRegistered || st.Mode != tokenstore.ModeOAuth {
		t.Errorf("status %+v", st)
	}
	// The new token works.
	if err := e.api.WithCredentials(e.mgr).IngestMetrics(ctx(t), nannyapi.MetricsReport{PlatformFamily: "debian"}); err != nil {
		t.Error(err)
	}
	// A live registration is not replaced without Force.
	_, err = e.reg.DeviceFlow(ctx(t), registration.DeviceFlowOptions{Host: host(), PollInterval: 10 * time.Millisecond})
	if !errors.Is(err, registration.ErrAlreadyRegistered) || e.srv.Hits(fakeapi.RouteDeviceAuthStart) != 1 {
		t.Errorf("re-register without force: %v", err)
	}
	res2, err := e.reg.DeviceFlow(ctx(t), registration.DeviceFlowOptions{Host: host(), PollInterval: 10 * time.Millisecond, Force: true})
	if err != nil || res2.AgentID == res.AgentID {
		t.Errorf("forced: %+v %v", res2, err)
	}
}

func TestDeviceFlowWaitsForApproval(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	codeCh := make(chan string, 1)
	var progress []string
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case code := <-codeCh:
			// Approve after a few "not authorized yet" polls.
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = e.srv.WaitHits(c, fakeapi.RouteRegister, 3)
			if err := e.srv.Approve(code); err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Error("no device code")
		}
	})
	res, err := e.reg.DeviceFlow(ctx(t), registration.DeviceFlowOptions{Host: host(), PollInterval: 20 * time.Millisecond,
		OnDeviceCode: func(c registration.DeviceCode) { codeCh <- c.UserCode },
		OnProgress:   func(s string) { progress = append(progress, s) }})
	wg.Wait()
	if err != nil || res.AgentID == "" {
		t.Fatalf("%+v %v", res, err)
	}
	// Approval happens once the third poll arrived; that poll may already
	// see it, so at least three polls ran, two of them refused.
	if n := e.srv.Hits(fakeapi.RouteRegister); n < 3 {
		t.Errorf("register polled %d times", n)
	}
	if len(progress) != 0 {
		t.Errorf("'not authorized yet' is not progress noise: %q", progress)
	}
}

func TestDeviceFlowEnds(t *testing.T) {
	cases := []struct {
		name  string
		setup func(e *env)
		want  error
		text  string
	}{
		{"code expires", nil, registration.ErrCodeExpired, "device code expired"},
		{"other backend error ends it", func(e *env) {
			e.srv.Fail(fakeapi.RouteRegister, 400, 0, `{"error":"invalid device code"}`)
		}, nil, "invalid device code"},
		{"garbage answer ends it", func(e *env) {
			e.srv.Fail(fakeapi.RouteRegister, 200, 0, `{"access_token":""}`)
		}, nil, "decode token answer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := fakeapi.NewClock(time.Now())
			e := newEnv(t, fakeapi.Options{Now: clock.Now})
			onCode := func(registration.DeviceCode) {}
			if tc.setup != nil {
				tc.setup(e)
			} else {
				// The server's clock moves past the code's 10 minutes.
				onCode = func(registration.DeviceCode) { clock.Advance(11 * time.Minute) }
			}
			_, err := e.reg.DeviceFlow(ctx(t), registration.DeviceFlowOptions{Host: host(), PollInterval: 5 * time.Millisecond, OnDeviceCode: onCode})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err %v", err)
			}
			if n := e.srv.Hits(fakeapi.RouteRegister); n != 1 {
				t.Errorf("polled %d times after a final answer", n)
			}
			if st := e.mgr.Status(); st.State != tokenstore.StateNotRegistered {
				t.Errorf("state %v", st.State)
			}
		})
	}
	t.Run("transient failures keep polling", func(t *testing.T) {
		e := newEnv(t, fakeapi.Options{AutoApprove: true})
		e.srv.Fail(fakeapi.RouteRegister, 503, 2, "<html>busy</html>")
		var progress []string
		res, err := e.reg.DeviceFlow(ctx(t), registration.DeviceFlowOptions{Host: host(), PollInterval: 5 * time.Millisecond,
			OnProgress: func(s string) { progress = append(progress, s) }})
		if err != nil || res.AgentID == "" || len(progress) != 2 {
			t.Errorf("%+v %v progress %q", res, err, progress)
		}
	})
	t.Run("context cancel stops polling", func(t *testing.T) {
		e := newEnv(t, fakeapi.Options{})
		c, cancel := context.WithCancel(context.Background())
		_, err := e.reg.DeviceFlow(c, registration.DeviceFlowOptions{Host: host(), PollInterval: 5 * time.Millisecond,
			OnDeviceCode: func(registration.DeviceCode) { time.AfterFunc(30*time.Millisecond, cancel) }})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v", err)
		}
	})
}

func TestStaticRegistration(t *testing.T) {
	e := newEnv(t, fakeapi.Options{RegisterWithToken: true})
	nsk := e.srv.AddStaticToken("")
	res, err := e.reg.Static(ctx(t), registration.StaticOptions{Token: nsk, Host: host()})
	if err != nil || res.Mode != registration.ModeStatic || res.AgentID == "" {
		t.Fatalf("%+v %v", res, err)
	}
	tok, err := e.store.Load()
	if err != nil || !tok.Static() || tok.AgentID != res.AgentID || tok.AccessToken != "" {
		t.Errorf("marker %v %v", tok, err)
	}
	if regs := e.srv.Registrations(); len(regs) != 1 || !regs[0].Static || regs[0].Body["kernel_version"] != "5.15.0-91-generic" {
		t.Errorf("registrations %+v", regs)
	}
	// Live: refused without Force; with Force and the known id, X-Agent-ID
	// re-registers the same agent.
	if _, err := e.reg.Static(ctx(t), registration.StaticOptions{Token: nsk, Host: host()}); !errors.Is(err, registration.ErrAlreadyRegistered) {
		t.Errorf("without force: %v", err)
	}
	again, err := e.reg.Static(ctx(t), registration.StaticOptions{Token: nsk, AgentID: res.AgentID, Host: host(), Force: true})
	if err != nil || again.AgentID != res.AgentID {
		t.Errorf("forced: %+v %v", again, err)
	}
	reqs := e.srv.Requests()
	if last := reqs[len(reqs)-1]; last.Header.Get("X-Agent-ID") != res.AgentID || last.Header.Get("Authorization") != "Bearer "+nsk {
		t.Errorf("headers %v", last.Header)
	}
}

func TestStaticOnOlderBackend(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	_, err := e.reg.Static(ctx(t), registration.StaticOptions{Token: "nsk_0123456789abcdef", Host: host()})
	if !errors.Is(err, registration.ErrStaticTokensUnsupported) || !strings.Contains(err.Error(), "does not support static tokens") {
		t.Errorf("err %v", err)
	}
	if strings.Contains(err.Error(), "nsk_0123456789abcdef") {
		t.Errorf("token in error: %v", err)
	}
	if _, err := e.reg.Static(ctx(t), registration.StaticOptions{Token: "abc", Host: host()}); err == nil {
		t.Error("malformed static token accepted")
	}
}

func TestNormalizeHost(t *testing.T) {
	cases := []struct {
		in      nannyapi.HostMetadata
		family  string
		wantErr bool
	}{
		{nannyapi.HostMetadata{Hostname: "h", Version: "1", OSInfo: "Rocky Linux 9.3"}, "rhel", false},
		{nannyapi.HostMetadata{Hostname: "h", Version: "1", OSInfo: "Debian GNU/Linux 12"}, "debian", false},
		{nannyapi.HostMetadata{Hostname: "h", Version: "1", OSInfo: "openSUSE Leap 15.5"}, "suse", false},
		{nannyapi.HostMetadata{Hostname: "h", Version: "1", OSInfo: "Alpine Linux v3.19"}, "alpine", false},
		{nannyapi.HostMetadata{Hostname: "h", Version: "1", OSInfo: "Plan 9"}, "unknown", false},
		{nannyapi.HostMetadata{Hostname: "h", Version: "1", PlatformFamily: "arch"}, "arch", false},
		{nannyapi.HostMetadata{Version: "1"}, "", true},
		{nannyapi.HostMetadata{Hostname: "h"}, "", true},
	}
	for _, tc := range cases {
		got, err := registration.NormalizeHost(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && (got.PlatformFamily != tc.family || got.OSType != "linux" || got.AllIPs == nil)) {
			t.Errorf("%+v: %+v %v", tc.in, got, err)
		}
	}
}
