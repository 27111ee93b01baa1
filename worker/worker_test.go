package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nannyai/nannyagent/ipc/unixsock"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/config"
)

func testConfig(t *testing.T, extra ...string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skip("current group has no name: " + err.Error())
	}
	args := append([]string{
		"--config", filepath.Join(dir, "none.yaml"), "--api-url", "http://127.0.0.1:9",
		"--worker-socket", filepath.Join(dir, "w", "worker.sock"),
		"--broker-socket", filepath.Join(dir, "absent.sock"),
		"--admin-group", g.Name, "--broker-timeout", "300ms",
		"--state-dir", filepath.Join(dir, "state"), "--token-path", filepath.Join(dir, "state", "token.json"),
	}, extra...)
	cfg, err := config.Load(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRunStopsEverything runs the worker without a broker, asks for status,
// cancels, and checks that no goroutine outlives Run.
func TestRunStopsEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, ln, func() { close(ready) }) }()
	<-ready

	conn, err := unixsock.Dial(cfg.WorkerSocket, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	st, err := workerv1.NewWorkerServiceClient(conn).Status(ctx, &workerv1.StatusRequest{})
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.GetVersion() != "test" || st.GetBroker().GetReachable() || st.GetBroker().GetError() == "" {
		t.Errorf("status %v: want the broker reported unreachable with a reason", st)
	}
	// Each problem comes with the command that fixes it.
	fixes := map[string]string{}
	for _, p := range st.GetProblems() {
		fixes[p.GetFix()] = p.GetWhat()
	}
	for _, fix := range []string{"systemctl start nannyagent-broker.socket", "nannyagent register", "curl -sS http://127.0.0.1:9/api/health"} {
		if fixes[fix] == "" {
			t.Errorf("no problem fixed by %q in %v", fix, st.GetProblems())
		}
	}
	if s := st.GetSettings(); s.GetTokenPath() != cfg.TokenPath || s.GetApiUrl() != "http://127.0.0.1:9" || s.GetMetricsInterval().AsDuration() != cfg.MetricsInterval {
		t.Errorf("settings %v", s)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestRegisteredRunStopsEverything runs the worker with a registration, so
// the metrics, Proxmox, token and realtime loops all start, against a fake
// NannyAPI, and checks that cancelling Run stops every goroutine.
func TestRegisteredRunStopsEverything(t *testing.T) {
	srv := fakeapi.New(fakeapi.Options{})
	defer srv.Close()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	creds := srv.AddAgent("", "leak-host", "debian")
	cfg := testConfig(t, "--api-url", srv.URL())
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	tok := fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"token_type":"","expires_at":%q,"agent_id":%q}`,
		creds.AccessToken, creds.RefreshToken, time.Now().Add(time.Hour).Format(time.RFC3339Nano), creds.ID)
	if err := os.WriteFile(cfg.TokenPath, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, ln, func() {}) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer wcancel()
	if _, err := srv.WaitSubscribed(wctx, creds.ID, "investigations"); err != nil {
		t.Fatalf("the realtime loop did not subscribe: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(9 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
