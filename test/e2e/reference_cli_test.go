package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
)

// TestReferenceInvocations runs the reference agent's command lines, as a
// script written for it would, against a registered host: each works
// unchanged or fails with one sentence saying where the setting lives now.
func TestReferenceInvocations(t *testing.T) {
	ai := fakeapi.NewScriptedAI(fakeapi.Diagnostic("load first", "uptime"), fakeapi.Resolution("an idle host", "1. nothing to do"))
	policy, _ := vendorPolicy(t)
	srv := startFake(t, fakeapi.Options{AI: ai})
	s, creds := registeredStack(t, srv, policy)
	ctx := diagnoseCtx(t)
	run := func(args ...string) stack.Result { return s.CLI(ctx, nil, args...) }

	status := run("status")
	if !strings.Contains(status.Stdout, "registration:  registered, agent "+creds.ID) {
		t.Fatalf("status:\n%s%s", status.Stdout, status.Stderr)
	}
	var settings struct {
		Settings struct {
			ApiUrl, TokenPath, AgentId       string
			MetricsInterval, ProxmoxInterval string
		}
	}
	js := run("--status", "--json")
	if err := json.Unmarshal([]byte(js.Stdout), &settings); err != nil {
		t.Fatalf("--status --json: %v\n%s", err, js.Stdout)
	}
	set := settings.Settings
	secs := func(d string) string { v, _ := time.ParseDuration(d); return fmt.Sprint(int(v.Seconds())) }

	type want struct {
		code           int
		stdout, stderr string
	}
	same := want{status.Code, "registration:  registered, agent " + creds.ID, ""}
	resolved := want{0, "=== DIAGNOSIS COMPLETE ===", ""}
	daemon := want{2, "", "the daemons are the systemd units now"}
	register := want{1, "", "already registered"}
	if os.Geteuid() != 0 {
		register.stderr = "only root may register"
	}
	elsewhere := func(key string) want {
		return want{2, "", "set " + key + " in /etc/nannyagent/config.yaml and run: systemctl restart nannyagent-worker"}
	}
	cases := []struct {
		args []string
		want want
	}{
		{[]string{"--version"}, want{0, "nannyagent version ", ""}},
		{[]string{"-version"}, want{0, "Linux diagnostic agent with eBPF capabilities", ""}},
		{[]string{"--help"}, want{0, "usage: nannyagent", ""}},
		{[]string{"-help"}, want{0, "usage: nannyagent", ""}},
		{[]string{"-h"}, want{0, "usage: nannyagent", ""}},
		{[]string{"--status"}, same},
		{[]string{"-status"}, same},
		{[]string{"--register"}, register},
		{[]string{"-register"}, register},
		{[]string{"register"}, register},
		{[]string{"--diagnose", "the disk is slow today"}, resolved},
		{[]string{"-diagnose=the disk is slow today"}, resolved},
		{[]string{"diagnose", "the disk is slow today"}, resolved},
		{[]string{"--debug", "diagnose", "the disk is slow today"}, want{0, "load average", ""}},
		{[]string{"--diagnose", "slow"}, want{2, "", "too short"}},
		{[]string{"--daemon"}, daemon},
		{[]string{"-daemon"}, daemon},
		{[]string{"daemon"}, daemon},
		{[]string{"--bogus"}, want{2, "", "flag provided but not defined: -bogus"}},
		// Overrides that match the worker's settings change nothing.
		{[]string{"--api-url", set.ApiUrl, "--status"}, same},
		{[]string{"--token-path", set.TokenPath, "--status"}, same},
		{[]string{"--agent-id", creds.ID, "--status"}, same},
		{[]string{"--metrics-interval", secs(set.MetricsInterval), "--proxmox-interval", secs(set.ProxmoxInterval), "--status"}, same},
		{[]string{"--metrics-interval", "0", "--status"}, same},
		{[]string{"--portal-url", "https://portal.example", "--status"}, want{same.code, same.stdout, "--portal-url is ignored"}},
		// Overrides that would change them say where the setting lives.
		{[]string{"--api-url", "https://api.nannyai.example", "--status"}, elsewhere("nannyapi_url")},
		{[]string{"--token-path", "/tmp/elsewhere/token.json", "--diagnose", "the disk is slow today"}, elsewhere("token_path")},
		{[]string{"--agent-id", "someoneelse1234", "--status"}, elsewhere("agent_id")},
		{[]string{"--metrics-interval", "600", "--status"}, elsewhere("metrics_interval")},
		{[]string{"--proxmox-interval", "7", "--status"}, elsewhere("proxmox_interval")},
	}
	for _, c := range cases {
		res := run(c.args...)
		if res.Code != c.want.code || !strings.Contains(res.Stdout, c.want.stdout) || !strings.Contains(res.Stderr, c.want.stderr) {
			t.Errorf("nannyagent %q: exit %d, want %d with %q / %q\nstdout:\n%s\nstderr:\n%s", c.args, res.Code, c.want.code, c.want.stdout, c.want.stderr, res.Stdout, res.Stderr)
		}
		if c.want.code == 2 && strings.Count(strings.TrimSpace(res.Stderr), "\n") > 1 {
			t.Errorf("nannyagent %q: more than one sentence: %q", c.args, res.Stderr)
		}
	}
	// A refused override never reached the backend: no investigation.
	for _, tr := range srv.AITurns() {
		for _, m := range tr.Messages {
			if strings.Contains(m.Content, "/tmp/elsewhere") {
				t.Error("a refused override let the diagnosis run")
			}
		}
	}
}

// agedToken writes token.json as this worker would have after a
// registration whose refresh token was issued at issued.
func agedToken(creds fakeapi.AgentCredentials, issued time.Time) func(*stack.Stack) error {
	return func(s *stack.Stack) error {
		doc := map[string]any{
			"access_token": creds.AccessToken, "refresh_token": creds.RefreshToken, "token_type": "",
			"expires_at": time.Now().Add(time.Hour).Format(time.RFC3339Nano), "agent_id": creds.ID,
			"worker": map[string]any{"refresh_token_issued_at": issued.Format(time.RFC3339Nano)},
		}
		data, _ := json.MarshalIndent(doc, "", "  ")
		path := filepath.Join(s.StateDir, "token.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
		return s.ChownToWorker(path)
	}
}

func tokenStack(t *testing.T, srv *fakeapi.Server, issued time.Time) (*stack.Stack, fakeapi.AgentCredentials) {
	t.Helper()
	policy, _ := vendorPolicy(t)
	creds := srv.AddAgent("", "status-host", "debian")
	s := startStack(t, stack.Options{APIURL: srv.URL(), Policy: policy, ExtraWorkerArgs: fastWorker, BeforeWorker: agedToken(creds, issued)})
	ctx := diagnoseCtx(t)
	if _, err := srv.WaitSubscribed(ctx, creds.ID, "investigations"); err != nil {
		t.Fatalf("the worker did not subscribe: %v\n%s", err, s.WorkerProcess().Log())
	}
	waitMetrics(t, srv, creds.ID, 1)
	return s, creds
}

type statusJSON struct {
	Registration struct {
		AgentId               string
		TokenExpiresAt        time.Time
		TokenExpirySource     string
		RefreshTokenDaysLeft  int
		RefreshTokenExpiresAt time.Time
	}
	Realtime struct {
		Connected      bool
		ConnectedSince time.Time
	}
	Operations []struct {
		Kind, Id, State, Note, Issue, RootCause string
	}
	Problems []struct{ What, Fix string }
}

func readStatus(t *testing.T, s *stack.Stack) (statusJSON, stack.Result) {
	t.Helper()
	res := s.CLI(diagnoseCtx(t), nil, "status", "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s%s", err, res.Stdout, res.Stderr)
	}
	return st, res
}

// A healthy registration: status exits 0 and tells the token's real expiry
// (its exp claim, 7 days, not the backend's expires_in hour), the refresh
// token's age, the stream, the metrics, where the agent id lives, and the
// recent operations with their outcomes and refusals.
func TestStatusHealthyToken(t *testing.T) {
	ai := fakeapi.NewScriptedAI(fakeapi.Diagnostic("load first", "uptime"), fakeapi.Resolution("an idle host", "1. nothing to do"))
	srv := startFake(t, fakeapi.Options{AI: ai})
	s, creds := tokenStack(t, srv, time.Now().Add(-3*24*time.Hour))
	if res := s.CLI(diagnoseCtx(t), nil, "diagnose", "the disk is slow today"); res.Code != 0 {
		t.Fatalf("diagnose: %s%s", res.Stdout, res.Stderr)
	}
	// A patch the packaged policy refuses (patch scripts are off).
	patch, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) && len(srv.PatchResults()) == 0 {
		time.Sleep(50 * time.Millisecond)
	}

	st, res := readStatus(t, s)
	r := st.Registration
	if r.TokenExpirySource != "exp claim" || r.TokenExpiresAt.Before(time.Now().Add(6*24*time.Hour)) {
		t.Errorf("token expiry %v from %q: want the JWT's 7 days", r.TokenExpiresAt, r.TokenExpirySource)
	}
	if r.RefreshTokenDaysLeft < 26 || r.RefreshTokenDaysLeft > 27 {
		t.Errorf("refresh token days left %d, want 26 or 27 (issued 3 days ago)", r.RefreshTokenDaysLeft)
	}
	if !st.Realtime.Connected || st.Realtime.ConnectedSince.IsZero() {
		t.Errorf("realtime %+v", st.Realtime)
	}
	if os.Geteuid() == 0 && (res.Code != 0 || len(st.Problems) != 0) {
		t.Errorf("a healthy host: exit %d, problems %+v", res.Code, st.Problems)
	}
	ops := map[string]string{}
	for _, op := range st.Operations {
		ops[op.Kind+" "+op.State] += op.Id + " " + op.Issue + " " + op.RootCause + " " + op.Note + ";"
	}
	if !strings.Contains(ops["investigation done"], "the disk is slow today an idle host") {
		t.Errorf("the CLI's diagnosis is not listed with its outcome: %v", ops)
	}
	var patchLine string
	for k, v := range ops {
		if strings.HasPrefix(k, "patch ") && strings.Contains(v, patch) {
			patchLine = k + ": " + v
		}
	}
	if patchLine == "" || !strings.Contains(patchLine, "failed") {
		t.Errorf("the refused patch is not listed as failed with its reason: %v", ops)
	}

	text := s.CLI(diagnoseCtx(t), nil, "status")
	for _, want := range []string{
		"access token:  valid until ", ", from the token's exp claim",
		"refresh token: issued ", "day(s) left of its 30",
		"agent id:      " + creds.ID + ", stored in " + filepath.Join(s.StateDir, "token.json") + " (key agent_id)",
		"realtime:      connected since ", "last metrics:  ",
		"recent investigations:\n", "      issue: the disk is slow today\n      root cause: an idle host",
		"recent patches:\n  " + patch + "  FAILED",
	} {
		if !strings.Contains(text.Stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, text.Stdout)
		}
	}
	if strings.Contains(text.Stdout, "DEGRADED") && os.Geteuid() == 0 {
		t.Errorf("a healthy host shown degraded:\n%s", text.Stdout)
	}
}

// Four days before the 30-day cliff, with a backend that cannot renew:
// status says so with the fix and exits 1 for monitoring.
func TestStatusNearTheCliff(t *testing.T) {
	srv := startFake(t, fakeapi.Options{})
	s, _ := tokenStack(t, srv, time.Now().Add(-26*24*time.Hour))
	st, res := readStatus(t, s)
	if res.Code != 1 || !hasProblem(st, "expires in 3 day(s)", "nannyagent register --force") {
		t.Errorf("exit %d, problems %+v", res.Code, st.Problems)
	}
	text := s.CLI(diagnoseCtx(t), nil, "status")
	if text.Code != 1 || !strings.Contains(text.Stdout, "DEGRADED") || !strings.Contains(text.Stdout, "    fix: nannyagent register --force") {
		t.Errorf("status text, exit %d:\n%s", text.Code, text.Stdout)
	}
}

// Past the cliff the host is offline: status says the refresh token
// expired, with the fix, and exits 1.
func TestStatusExpiredToken(t *testing.T) {
	srv := startFake(t, fakeapi.Options{})
	policy, _ := vendorPolicy(t)
	creds := srv.AddAgent("", "expired-host", "debian")
	s := startStack(t, stack.Options{APIURL: srv.URL(), Policy: policy, ExtraWorkerArgs: fastWorker,
		BeforeWorker: agedToken(creds, time.Now().Add(-31*24*time.Hour))})
	st, res := readStatus(t, s)
	if res.Code != 1 || !hasProblem(st, "expired", "nannyagent register --force") {
		t.Errorf("exit %d, problems %+v", res.Code, st.Problems)
	}
	text := s.CLI(diagnoseCtx(t), nil, "status")
	if !strings.Contains(text.Stdout, "EXPIRED") || !strings.Contains(text.Stdout, "fix: nannyagent register --force") {
		t.Errorf("status text:\n%s", text.Stdout)
	}
}

func hasProblem(st statusJSON, what, fix string) bool {
	for _, p := range st.Problems {
		if strings.Contains(p.What, what) && p.Fix == fix {
			return true
		}
	}
	return false
}

// statusAnswered: the worker answered status. A stack that is not
// registered and has no NannyAPI is degraded, so status exits 1 there.
func statusAnswered(res stack.Result) bool {
	return (res.Code == 0 || res.Code == 1) && strings.Contains(res.Stdout, "worker:        running")
}

// The broker goes away: status names it with the command that brings it
// back, and exits 1.
func TestStatusBrokerUnreachable(t *testing.T) {
	srv := startFake(t, fakeapi.Options{})
	s, _ := tokenStack(t, srv, time.Now())
	broker := s.BrokerProcess()
	if err := syscall.Kill(broker.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(9 * time.Second)
	for !broker.Exited() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st, res := readStatus(t, s)
	if res.Code != 1 || !hasProblem(st, "the broker does not answer", "systemctl start nannyagent-broker.socket") {
		t.Errorf("exit %d, problems %+v", res.Code, st.Problems)
	}
	text := s.CLI(diagnoseCtx(t), nil, "status")
	if !strings.Contains(text.Stdout, "broker:        UNREACHABLE") || !strings.Contains(text.Stdout, "fix: systemctl start nannyagent-broker.socket") {
		t.Errorf("status text:\n%s", text.Stdout)
	}
}
