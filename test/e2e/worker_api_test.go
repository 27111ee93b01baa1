package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
)

// fastWorker shortens the worker's waits for tests.
var fastWorker = []string{"--register-poll-interval", "100ms", "--metrics-interval", "5s"}

func startFake(t *testing.T, opts fakeapi.Options) *fakeapi.Server {
	t.Helper()
	srv := fakeapi.New(opts)
	t.Cleanup(srv.Close)
	return srv
}

// referenceToken writes token.json as the reference agent would have left
// it, with its access token already expired.
func referenceToken(creds fakeapi.AgentCredentials, expired bool) func(*stack.Stack) error {
	return func(s *stack.Stack) error {
		expires := time.Now().Add(time.Hour)
		if expired {
			expires = time.Now().Add(-time.Minute)
		}
		doc := map[string]any{
			"access_token": creds.AccessToken, "refresh_token": creds.RefreshToken,
			"token_type": "", "expires_at": expires.Format(time.RFC3339Nano), "agent_id": creds.ID,
		}
		data, _ := json.MarshalIndent(doc, "", "  ")
		path := filepath.Join(s.StateDir, "token.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
		return s.ChownToWorker(path)
	}
}

func waitMetrics(t *testing.T, srv *fakeapi.Server, agentID string, n int) []fakeapi.MetricsPost {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		var mine []fakeapi.MetricsPost
		for _, m := range srv.Metrics() {
			if m.AgentID == agentID {
				mine = append(mine, m)
			}
		}
		if len(mine) >= n {
			return mine
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("fewer than %d metrics posts from agent %s", n, agentID)
	return nil
}

func readToken(t *testing.T, s *stack.Stack) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.StateDir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("token.json: %v\n%s", err, data)
	}
	return m
}

func TestDeviceFlowRegistration(t *testing.T) {
	srv := startFake(t, fakeapi.Options{})
	s := startStack(t, stack.Options{APIURL: srv.URL(), ExtraWorkerArgs: fastWorker})
	ctx := ctxT(t)
	go func() {
		code, err := srv.WaitDeviceCode(ctx)
		if err == nil {
			_ = srv.Approve(code)
		}
	}()
	res := s.CLI(ctx, nil, "register")
	if res.Code != 0 {
		t.Fatalf("register exit %d: %s%s", res.Code, res.Stdout, res.Stderr)
	}
	for _, want := range []string{"/agent/authorize?user_code=", "and enter the code:", "Registered: agent"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("register output lacks %q:\n%s", want, res.Stdout)
		}
	}
	regs := srv.Registrations()
	if len(regs) != 1 {
		t.Fatalf("%d registrations", len(regs))
	}
	body := regs[0].Body
	for _, key := range []string{"hostname", "os_type", "os_info", "platform_family", "version", "kernel_version", "arch"} {
		if v, _ := body[key].(string); v == "" {
			t.Errorf("registration sent an empty %s: %v", key, body)
		}
	}
	if body["version"] == "1.0.0" {
		t.Error("registration sent the reference agent's hard-coded version")
	}
	waitMetrics(t, srv, regs[0].AgentID, 1)
	st := s.CLI(ctx, nil, "status")
	if !strings.Contains(st.Stdout, "registration:  registered, agent "+regs[0].AgentID) {
		t.Errorf("status after registration:\n%s", st.Stdout)
	}
	// A second registration over a live one needs --force.
	if again := s.CLI(ctx, nil, "register"); again.Code == 0 || !strings.Contains(again.Stderr, "already registered") {
		t.Errorf("re-registration without --force: exit %d %s", again.Code, again.Stderr)
	}
	tok := readToken(t, s)
	if tok["agent_id"] != regs[0].AgentID || tok["refresh_token"] == "" {
		t.Errorf("token.json %v", tok)
	}
	info, _ := os.Stat(filepath.Join(s.StateDir, "token.json"))
	if info.Mode().Perm() != 0o600 {
		t.Errorf("token.json mode %v", info.Mode())
	}
}

func TestStaticTokenRegistration(t *testing.T) {
	srv := startFake(t, fakeapi.Options{RegisterWithToken: true})
	token := srv.AddStaticToken("")
	s := startStack(t, stack.Options{APIURL: srv.URL(), ExtraWorkerArgs: fastWorker,
		WorkerEnv: []string{"NANNYAI_STATIC_TOKEN=" + token}})
	ctx := ctxT(t)
	res := s.CLI(ctx, nil, "register")
	if res.Code != 0 || !strings.Contains(res.Stdout, "(static)") {
		t.Fatalf("static register exit %d: %s%s", res.Code, res.Stdout, res.Stderr)
	}
	regs := srv.Registrations()
	if len(regs) != 1 || !regs[0].Static {
		t.Fatalf("registrations %+v", regs)
	}
	waitMetrics(t, srv, regs[0].AgentID, 1)
	var sawHeader bool
	for _, r := range srv.Requests() {
		if r.Route == fakeapi.RouteIngestMetrics && r.Header.Get("X-Agent-ID") == regs[0].AgentID &&
			r.Header.Get("Authorization") == "Bearer "+token {
			sawHeader = true
		}
	}
	if !sawHeader {
		t.Error("metrics not sent with the static token and X-Agent-ID")
	}
	tok := readToken(t, s)
	if tok["token_type"] != "static" || tok["agent_id"] != regs[0].AgentID || tok["access_token"] != "" {
		t.Errorf("static marker token file %v", tok)
	}
	if strings.Contains(s.WorkerProcess().Log(), token) {
		t.Error("the static token appears in the worker's log")
	}
	if b, _ := exec.Command("ps", "-eo", "args").Output(); strings.Contains(string(b), token) {
		t.Error("the static token appears on a command line")
	}
}

func TestRefreshOnExpiryAndOn401(t *testing.T) {
	srv := startFake(t, fakeapi.Options{})
	creds := srv.AddAgent("", "migrated-host", "debian")
	s := startStack(t, stack.Options{APIURL: srv.URL(), ExtraWorkerArgs: fastWorker,
		BeforeWorker: referenceToken(creds, true)})
	// The migrated token was expired: the first heartbeat needs a refresh.
	waitMetrics(t, srv, creds.ID, 1)
	if srv.Hits(fakeapi.RouteRefresh) < 1 {
		t.Fatal("no refresh before using an expired token")
	}
	// The backend answers "refresh_token":"" — the old one must be kept.
	if tok := readToken(t, s); tok["refresh_token"] != creds.RefreshToken {
		t.Errorf("refresh token after refresh %v, want the original kept", tok["refresh_token"])
	}
	// Now the server rejects the access token: one refresh, then success.
	refreshes := srv.Hits(fakeapi.RouteRefresh)
	srv.ExpireAccessTokens(creds.ID)
	before := len(waitMetrics(t, srv, creds.ID, 1))
	waitMetrics(t, srv, creds.ID, before+1)
	if srv.Hits(fakeapi.RouteRefresh) != refreshes+1 {
		t.Errorf("refreshes after a 401: %d, want exactly one more", srv.Hits(fakeapi.RouteRefresh)-refreshes)
	}
	st := s.CLI(ctxT(t), nil, "status")
	if !strings.Contains(st.Stdout, "refresh token:") || !strings.Contains(st.Stdout, "last metrics:") {
		t.Errorf("status lacks the token and heartbeat lines:\n%s", st.Stdout)
	}
}

func TestFullDiskKeepsTheOldToken(t *testing.T) {
	requireRoot(t)
	srv := startFake(t, fakeapi.Options{})
	creds := srv.AddAgent("", "small-disk", "debian")
	var mounted string
	// Registered before the stack, so it runs after the worker has stopped.
	t.Cleanup(func() {
		if mounted != "" {
			_ = exec.Command("umount", mounted).Run()
			// The stack could not remove the mount point while mounted.
			_ = os.RemoveAll(filepath.Dir(mounted))
		}
	})
	s := startStack(t, stack.Options{APIURL: srv.URL(), ExtraWorkerArgs: fastWorker,
		BeforeWorker: func(s *stack.Stack) error {
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", s.StateDir).CombinedOutput(); err != nil {
				return fmt.Errorf("mount tmpfs: %v %s", err, out)
			}
			mounted = s.StateDir
			if err := s.ChownToWorker(s.StateDir); err != nil {
				return err
			}
			return referenceToken(creds, false)(s)
		}})
	waitMetrics(t, srv, creds.ID, 1)
	original, err := os.ReadFile(filepath.Join(s.StateDir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Fill the disk, then make the server reject the token: the refresh
	// succeeds but cannot be written.
	fill := filepath.Join(s.StateDir, "fill")
	_ = exec.Command("dd", "if=/dev/zero", "of="+fill, "bs=4k", "count=64").Run()
	srv.ExpireAccessTokens(creds.ID)
	before := len(waitMetrics(t, srv, creds.ID, 1))
	waitMetrics(t, srv, creds.ID, before+1)
	after, err := os.ReadFile(filepath.Join(s.StateDir, "token.json"))
	if err != nil || string(after) != string(original) {
		t.Fatalf("token.json changed or lost on a full disk: %v\n%s", err, after)
	}
	entries, _ := os.ReadDir(s.StateDir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
