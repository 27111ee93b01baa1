package worker

import (
	"context"
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
	"github.com/nannyai/nannyagent/worker/config"
)

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Skip("current group has no name: " + err.Error())
	}
	cfg, err := config.Load([]string{
		"--config", filepath.Join(dir, "none.yaml"), "--api-url", "http://127.0.0.1:9",
		"--worker-socket", filepath.Join(dir, "w", "worker.sock"),
		"--broker-socket", filepath.Join(dir, "absent.sock"),
		"--admin-group", g.Name, "--broker-timeout", "300ms",
		"--state-dir", filepath.Join(dir, "state"), "--token-path", filepath.Join(dir, "state", "token.json"),
	}, func(string) string { return "" }, io.Discard)
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
