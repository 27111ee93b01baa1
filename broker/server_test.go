package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nannyai/nannyagent/broker/probe"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/policy"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testBroker struct {
	srv    *Server
	client brokerv1.BrokerServiceClient
	conn   *grpc.ClientConn
	log    *syncBuffer
	policy string
	stop   func() error
}

func fakeProbeConfig(t testing.TB) probe.Config {
	cfg := probe.DefaultConfig()
	cfg.BpftraceCandidates = []string{"/bin/true"}
	cfg.Runner = func(_ context.Context, argv []string) ([]byte, int, error) {
		if len(argv) > 1 && argv[1] == "--version" {
			return []byte("bpftrace v0.99.0\n"), 0, nil
		}
		return []byte("stdin:1:1-15: ERROR: kfunc/kretfunc not available for your kernel version.\n"), 1, nil
	}
	return cfg
}

func startBroker(t testing.TB, idle time.Duration) *testBroker {
	return startBrokerWith(t, idle, "version: 1\n")
}

func startBrokerWith(t testing.TB, idle time.Duration, policyYAML string) *testBroker {
	t.Helper()
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(policyYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	return startBrokerAt(t, dir, idle)
}

// startBrokerInDir starts a broker again on the policy and state another
// one used in dir (as after a restart).
func startBrokerInDir(t testing.TB, dir string) *testBroker {
	t.Helper()
	return startBrokerAt(t, dir, 0)
}

func startBrokerAt(t testing.TB, dir string, idle time.Duration) *testBroker {
	policyPath := filepath.Join(dir, "policy.yaml")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &syncBuffer{}
	srv, err := New(Config{
		Version:    "test",
		WorkerUser: me.Username,
		LoadPolicy: func() (*policy.Policy, error) { return policy.Load(policy.LoadOptions{}, policyPath) },
		Probe:      fakeProbeConfig(t),
		Limits:     unixsock.DefaultLimits,
		IdleExit:   idle,
		StateDir:   filepath.Join(dir, "state"),
		Log:        slog.New(slog.NewJSONHandler(logBuf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "b.sock")
	_ = os.Remove(sock)
	ln, err := unixsock.Listen(context.Background(), unixsock.ListenConfig{Path: sock, DirMode: 0o755, SocketMode: 0o660, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	conn, err := unixsock.Dial(sock, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBroker{srv: srv, client: brokerv1.NewBrokerServiceClient(conn), conn: conn, log: logBuf, policy: policyPath}
	var once sync.Once
	var stopErr error
	tb.stop = func() error {
		once.Do(func() {
			conn.Close()
			cancel()
			stopErr = <-done
		})
		return stopErr
	}
	t.Cleanup(func() { _ = tb.stop() })
	return tb
}

func TestProbeOverTheSocket(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := startBroker(t, 0)
	resp, err := b.client.Probe(context.Background(), &brokerv1.ProbeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := policy.Load(policy.LoadOptions{}, b.policy)
	if resp.GetBrokerVersion() != "test" || resp.GetPolicy().GetSha256() != p.SHA256() {
		t.Errorf("probe %v", resp)
	}
	if !resp.GetBpftrace().GetFound() || resp.GetBpftrace().GetVersion() != "v0.99.0" {
		t.Errorf("bpftrace %v", resp.GetBpftrace())
	}
	if k := resp.GetProbeKinds().GetKfunc(); k.GetAvailable() || !strings.Contains(k.GetEvidence(), "kfunc/kretfunc not available") {
		t.Errorf("kfunc %v: want unavailable with bpftrace's words", k)
	}
	if err := b.stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
}

func TestUnimplementedRequestsAnswerUnimplemented(t *testing.T) {
	b := startBroker(t, 0)
	ctx := context.Background()
	calls := map[string]func() error{
		"RunPatch":    func() error { _, err := b.client.RunPatch(ctx, &brokerv1.RunPatchRequest{}); return err },
		"PatchResult": func() error { _, err := b.client.PatchResult(ctx, &brokerv1.PatchResultRequest{}); return err },
	}
	for name, call := range calls {
		if code := status.Code(call()); code != codes.Unimplemented {
			t.Errorf("%s: code %v, want Unimplemented", name, code)
		}
	}
	// A method that is not part of the service at all.
	err := b.conn.Invoke(ctx, "/nannyagent.broker.v1.BrokerService/Exec", &brokerv1.ProbeRequest{}, &brokerv1.ProbeResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown method: %v", err)
	}
}

func TestRequestTableRefusesWhatItDoesNotList(t *testing.T) {
	b := startBroker(t, 0)
	b.srv.table = map[string]request{}
	_, err := b.client.Probe(context.Background(), &brokerv1.ProbeRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a method outside the table was served: %v", err)
	}
	if !strings.Contains(b.log.String(), `"decision":"deny"`) {
		t.Errorf("refusal not logged: %s", b.log.String())
	}
}

func TestHandlerPanicBecomesAnError(t *testing.T) {
	b := startBroker(t, 0)
	info := &grpc.UnaryServerInfo{FullMethod: brokerv1.BrokerService_Probe_FullMethodName}
	_, err := b.srv.intercept(context.Background(), nil, info, func(context.Context, any) (any, error) {
		panic("boom")
	})
	if status.Code(err) != codes.Internal {
		t.Fatalf("err %v, want Internal", err)
	}
	if !strings.Contains(b.log.String(), "handler panic") || !strings.Contains(b.log.String(), `"decision":"error"`) {
		t.Errorf("panic not logged as an error decision: %s", b.log.String())
	}
}

func TestDecisionLogLine(t *testing.T) {
	b := startBroker(t, 0)
	if _, err := b.client.Probe(context.Background(), &brokerv1.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	for _, l := range strings.Split(b.log.String(), "\n") {
		if strings.Contains(l, `"rpc":"Probe"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, key := range []string{"peer_uid", "peer_pid", "decision", "rule", "policy_sha256", "duration_ms"} {
		if _, ok := line[key]; !ok {
			t.Errorf("decision line lacks %q: %v", key, line)
		}
	}
}

func TestIdleExit(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := startBroker(t, 300*time.Millisecond)
	if _, err := b.client.Probe(context.Background(), &brokerv1.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.stopAfterIdle() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no idle exit")
	}
}

// stopAfterIdle waits for Serve to return on its own.
func (b *testBroker) stopAfterIdle() error {
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(b.log.String(), "idle, exiting") {
			return b.stop()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("broker did not report idleness")
}

func TestTruncateArgv(t *testing.T) {
	long := strings.Repeat("a", 1000)
	argv := make([]string, 100)
	for i := range argv {
		argv[i] = long
	}
	got := truncateArgv(argv)
	if len(got) != maxLoggedArgs+1 || got[maxLoggedArgs] != truncationMarker {
		t.Fatalf("len %d, last %q", len(got), got[len(got)-1])
	}
	if len(got[0]) > maxLoggedArgLen+len(truncationMarker) {
		t.Errorf("argument not truncated: %d bytes", len(got[0]))
	}
}

func BenchmarkProbeRoundTrip(b *testing.B) {
	tb := startBroker(b, 0)
	ctx := context.Background()
	if _, err := tb.client.Probe(ctx, &brokerv1.ProbeRequest{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := tb.client.Probe(ctx, &brokerv1.ProbeRequest{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCollectMetricsOverTheSocket(t *testing.T) {
	b := startBroker(t, 0)
	m, err := b.client.CollectMetrics(context.Background(), &brokerv1.CollectMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m.GetCpu().GetUser() <= 0 || m.GetMemory().GetTotal() == 0 || m.GetHost().GetPlatformFamily() == "" || m.GetCollectedAt() == nil {
		t.Errorf("sample incomplete: cpu %v memory %v host %v", m.GetCpu(), m.GetMemory(), m.GetHost())
	}
}

func TestDecisionLogRedactsArgv(t *testing.T) {
	got := truncateArgv([]string{"/usr/bin/mysql", "-psecretpass", "--password=hunter2", "-h", "db"})
	joined := strings.Join(got, " ")
	if strings.Contains(joined, "secretpass") || strings.Contains(joined, "hunter2") || !strings.Contains(joined, "db") {
		t.Errorf("argv not redacted: %q", got)
	}
}
