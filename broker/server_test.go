package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/broker/patch"
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
	return startBrokerOpts(t, idle, policyYAML, nil)
}

// startBrokerOpts starts a broker whose Config edit may change.
func startBrokerOpts(t testing.TB, idle time.Duration, policyYAML string, edit func(*Config)) *testBroker {
	t.Helper()
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(policyYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	return startBrokerAt(t, dir, idle, edit)
}

// startBrokerInDir starts a broker again on the policy and state another
// one used in dir (as after a restart).
func startBrokerInDir(t testing.TB, dir string) *testBroker {
	t.Helper()
	return startBrokerAt(t, dir, 0, nil)
}

// startBrokerAt starts a broker on the policy in dir, with its state
// directory there too, unless edit changes it.
func startBrokerAt(t testing.TB, dir string, idle time.Duration, edit func(*Config)) *testBroker {
	policyPath := filepath.Join(dir, "policy.yaml")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &syncBuffer{}
	cfg := Config{
		Version:    "test",
		WorkerUser: me.Username,
		LoadPolicy: func() (*policy.Policy, error) { return policy.Load(policy.LoadOptions{}, policyPath) },
		Probe:      fakeProbeConfig(t),
		Limits:     unixsock.DefaultLimits,
		// Generous: a test's client may take long to marshal a huge
		// request after it sent the headers.
		ReadTimeout: time.Minute,
		IdleExit:    idle,
		StateDir:    filepath.Join(dir, "state"),
		Log:         slog.New(slog.NewJSONHandler(logBuf, nil)),
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := New(cfg)
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

// TestPatchesAndRebootsRefuseNamingThePolicy: no RPC answers "not
// implemented": under the default policy RunPatch and Reboot refuse,
// naming the policy section that is off, and each refusal is a logged
// denial; PatchResult finds no run.
func TestPatchesAndRebootsRefuseNamingThePolicy(t *testing.T) {
	b := startBroker(t, 0)
	ctx := context.Background()
	script := []byte("#!/bin/sh\n")
	run, err := b.client.RunPatch(ctx, &brokerv1.RunPatchRequest{OperationId: "op-1", Script: script, Sha256: patch.Sum(script), Mode: brokerv1.PatchMode_PATCH_MODE_DRY_RUN})
	if err != nil || run.GetState() != brokerv1.PatchState_PATCH_STATE_REFUSED || !strings.Contains(run.GetReason(), "disabled by this host's policy (patches.enabled") || run.GetOperationId() != "op-1" {
		t.Errorf("RunPatch: %v %v", run, err)
	}
	if _, err := b.client.PatchResult(ctx, &brokerv1.PatchResultRequest{OperationId: "op-1"}); status.Code(err) != codes.NotFound {
		t.Errorf("PatchResult: %v", err)
	}
	rb, err := b.client.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "r-1"})
	if err != nil || rb.GetAllowed() || rb.GetReason() != "reboots: reboots are disabled by policy" {
		t.Errorf("Reboot: %v %v", rb, err)
	}
	for _, rpc := range []string{"RunPatch", "Reboot"} {
		if l := logLine(t, b.log.String(), rpc); l["decision"] != "deny" || !strings.Contains(fmt.Sprint(l["reason"]), "policy") {
			t.Errorf("%s logged as %v", rpc, l)
		}
	}
}

// TestTableHoldsEveryMethod: the table and the service definition name the
// same methods, each once.
func TestTableHoldsEveryMethod(t *testing.T) {
	b := startBroker(t, 0)
	want := map[string]bool{}
	for _, m := range brokerv1.BrokerService_ServiceDesc.Methods {
		want["/"+brokerv1.BrokerService_ServiceDesc.ServiceName+"/"+m.MethodName] = true
	}
	if len(brokerv1.BrokerService_ServiceDesc.Streams) != 0 {
		t.Error("the broker's service has streaming methods")
	}
	seen := map[string]bool{}
	for _, e := range b.srv.table {
		if !want[e.method] || seen[e.method] || e.handle == nil || e.refuse == nil || e.shape.max == nil {
			t.Errorf("table entry %s", e.method)
		}
		seen[e.method] = true
	}
	if len(seen) != len(want) {
		t.Errorf("table has %d methods, the service %d", len(seen), len(want))
	}
}

// TestUnknownMethodRefusedAndLogged: a method outside the table is
// refused, and the refusal is in the decision log with the method named.
func TestUnknownMethodRefusedAndLogged(t *testing.T) {
	b := startBroker(t, 0)
	err := b.conn.Invoke(context.Background(), "/nannyagent.broker.v1.BrokerService/Exec", &brokerv1.ProbeRequest{}, &brokerv1.ProbeResponse{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unknown method: %v", err)
	}
	l := logLine(t, b.log.String(), "unknown /nannyagent.broker.v1.BrokerService/Exec")
	if l["decision"] != "deny" || l["reason"] != reasonUnknownMethod {
		t.Errorf("logged as %v", l)
	}
	// Without the admission tap, gRPC's unknown-method handler refuses and
	// logs it the same way.
	if err := b.srv.unknownMethod(nil, fakeStream{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("unknown handler: %v", err)
	}
	if n := strings.Count(b.log.String(), `"rpc":"unknown /nannyagent.broker.v1.BrokerService/Exec"`); n != 1 {
		t.Errorf("%d log lines for the tap's refusal", n)
	}
}

// fakeStream is a stream with a background context, for calling the
// unknown-method handler directly.
type fakeStream struct{ grpc.ServerStream }

func (fakeStream) Context() context.Context { return context.Background() }

func TestHandlerPanicBecomesAnError(t *testing.T) {
	b := startBroker(t, 0)
	e := entry(brokerv1.BrokerService_Probe_FullMethodName, "Probe", emptyShape,
		func(context.Context, *brokerv1.ProbeRequest) (*brokerv1.ProbeResponse, error) { panic("boom") },
		refuseStatus[*brokerv1.ProbeResponse])
	_, err := b.srv.serve(context.Background(), e, func(any) error { return nil })
	if status.Code(err) != codes.Internal {
		t.Fatalf("err %v, want Internal", err)
	}
	if !strings.Contains(b.log.String(), "handler panic") || !strings.Contains(b.log.String(), `"decision":"error"`) {
		t.Errorf("panic not logged as an error decision: %s", b.log.String())
	}
}

// logLine returns the last decision line for rpc.
func logLine(t *testing.T, log, rpc string) map[string]any {
	t.Helper()
	var line map[string]any
	for _, l := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "decision" && m["rpc"] == rpc {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no decision line for %s in:\n%s", rpc, log)
	}
	return line
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

func TestLoggedStagesAreBounded(t *testing.T) {
	long := strings.Repeat("a", 1000)
	argv := make([]string, 100)
	for i := range argv {
		argv[i] = long
	}
	argv[0] = "/usr/bin/echo"
	program, got := loggedStages([][]string{argv, argv})
	if len(got) != maxLoggedArgs+1 || got[maxLoggedArgs] != truncationMarker {
		t.Fatalf("len %d, last %q", len(got), got[len(got)-1])
	}
	if len(got[0]) > maxLoggedArgLen+len(truncationMarker) {
		t.Errorf("argument not truncated: %d bytes", len(got[0]))
	}
	if program != "/usr/bin/echo|/usr/bin/echo" {
		t.Errorf("program %q", program)
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

// TestDecisionLogRedacts: program and argv are redacted together (the
// per-tool rules need the program), per stage; reason and error too.
func TestDecisionLogRedacts(t *testing.T) {
	program, argv := loggedStages([][]string{
		{"/usr/bin/mysql", "-psecretpass", "--password=hunter2", "-h", "db"},
		{"/usr/bin/curl", "-u", "bob:curlsecret", "http://127.0.0.1/"},
		{"/usr/bin/sshpass", "-p", "sshsecret", "ssh", "host"},
	})
	joined := program + " " + strings.Join(argv, " ")
	for _, secret := range []string{"secretpass", "hunter2", "curlsecret", "sshsecret"} {
		if strings.Contains(joined, secret) {
			t.Errorf("%s logged: %q", secret, joined)
		}
	}
	if !strings.Contains(joined, "db") || !strings.Contains(joined, "bob:") {
		t.Errorf("more than the secrets went: %q", joined)
	}
	if r := redactText("path /var/log/x password=hunter2 refused"); strings.Contains(r, "hunter2") {
		t.Errorf("reason not redacted: %q", r)
	}
}

// TestNoIdleExitWhileADetachedRunLives: a detached run (a patch run, later)
// keeps the broker from exiting when idle; once it ends, the idle time
// counts from there.
func TestNoIdleExitWhileADetachedRunLives(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: run cgroups")
	}
	b := startBroker(t, 300*time.Millisecond)
	p, err := b.srv.runner.StartDetached(context.Background(), execute.Spec{Path: "/usr/bin/sleep", Argv: []string{"/usr/bin/sleep", "1.5"}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if strings.Contains(b.log.String(), "idle, exiting") {
		t.Fatal("the broker went idle while a detached run lived")
	}
	<-p.Done()
	if err := b.stopAfterIdle(); err != nil {
		t.Fatal(err)
	}
}
