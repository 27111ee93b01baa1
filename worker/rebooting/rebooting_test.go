package rebooting_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/realtime"
	"github.com/nannyai/nannyagent/worker/rebooting"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// heartbeats is a fake metrics loop that tracks pauses.
type heartbeats struct {
	mu     sync.Mutex
	paused bool
	pauses int
}

func (h *heartbeats) Pause() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.paused = true
	h.pauses++
}

func (h *heartbeats) Resume() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.paused = false
}

func (h *heartbeats) isPaused() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.paused
}

// broker answers the check and the reboot as configured and records them.
type broker struct {
	mu      sync.Mutex
	reqs    []*brokerv1.RebootRequest
	check   *brokerv1.RebootResponse
	perform *brokerv1.RebootResponse
	err     error
}

func (b *broker) Reboot(_ context.Context, in *brokerv1.RebootRequest, _ ...grpc.CallOption) (*brokerv1.RebootResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reqs = append(b.reqs, in)
	if b.err != nil {
		return nil, b.err
	}
	if in.GetCheckOnly() {
		return b.check, nil
	}
	return b.perform, nil
}

func (b *broker) requests() []*brokerv1.RebootRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*brokerv1.RebootRequest(nil), b.reqs...)
}

var (
	allowed = &brokerv1.RebootResponse{Allowed: true, RuleId: "reboots.host"}
	started = &brokerv1.RebootResponse{Allowed: true, Started: true, Warned: true}
	failing = &brokerv1.RebootResponse{Allowed: true, ExitCode: 1, Reason: "/usr/bin/systemctl reboot exited with status 1", Output: "Failed to reboot"}
)

type env struct {
	t       *testing.T
	fake    *fakeapi.Server
	client  *nannyapi.Client
	agent   fakeapi.AgentCredentials
	dir     string
	metrics *heartbeats
	broker  *broker
	acked   []string
	boot    time.Time
}

func newEnv(t *testing.T, opts fakeapi.Options) *env {
	fake := fakeapi.New(opts)
	t.Cleanup(fake.Close)
	c, ag, err := fake.AgentClient("host-1", "debian")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &env{t: t, fake: fake, client: c, agent: ag, dir: t.TempDir(), metrics: &heartbeats{},
		broker: &broker{check: allowed, perform: started}, boot: time.Now().Add(-time.Hour)}
}

func (e *env) hold(tick time.Duration) *rebooting.Hold {
	e.t.Helper()
	h, err := rebooting.NewHold(rebooting.HoldConfig{Dir: e.dir, Metrics: e.metrics, Records: e.client,
		MonitorTick: tick, Poll: 20 * time.Millisecond, BootTime: func() (time.Time, error) { return e.boot, nil }})
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// run runs the hold's loop until the test ends.
func (e *env) run(h *rebooting.Hold) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

func (e *env) handler(h *rebooting.Hold) *rebooting.Handler {
	return &rebooting.Handler{API: e.client, Broker: e.broker, Hold: h,
		Acknowledging: func(id string) error { e.acked = append(e.acked, id); return nil }}
}

func (e *env) reboot(spec fakeapi.RebootSpec) nannyapi.RebootOperation {
	e.t.Helper()
	id, err := e.fake.CreateReboot(e.agent.ID, spec)
	if err != nil {
		e.t.Fatal(err)
	}
	recs, err := e.client.ListRebootOperations(context.Background(), nannyapi.RecordQuery{Status: "sent"})
	if err != nil || len(recs) != 1 || recs[0].ID != id {
		e.t.Fatalf("list %v %v", recs, err)
	}
	return recs[0]
}

func (e *env) status(id string) string {
	rec, _ := e.fake.Record("reboot_operations", id)
	return rec["status"].(string)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRefusedRebootAcknowledgesNothing(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	e.broker.check = &brokerv1.RebootResponse{Reason: "reboots: reboots are disabled by policy"}
	op := e.reboot(fakeapi.RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 120})
	err := e.handler(e.hold(time.Second)).HandleReboot(context.Background(), op)
	var refused *realtime.RefusedError
	if !errors.As(err, &refused) || refused.Reason != "refused by the broker: reboots: reboots are disabled by policy" {
		t.Fatalf("err %v", err)
	}
	if e.fake.Hits(fakeapi.RouteRebootAck) != 0 || e.status(op.ID) != "sent" || len(e.acked) != 0 {
		t.Errorf("acknowledged: hits %d status %s", e.fake.Hits(fakeapi.RouteRebootAck), e.status(op.ID))
	}
	if e.metrics.pauses != 0 {
		t.Error("metrics paused for a refused reboot")
	}
	if reqs := e.broker.requests(); len(reqs) != 1 || !reqs[0].GetCheckOnly() || reqs[0].GetReason() != "Kernel update applied" {
		t.Errorf("broker asked %v", reqs)
	}
	if _, err := os.Stat(filepath.Join(e.dir, rebooting.HoldFile)); !os.IsNotExist(err) {
		t.Errorf("hold file: %v", err)
	}
}

func TestRefusedBeforeTheBroker(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	h := e.handler(e.hold(time.Second))
	h.PatchRunning = func() (string, bool) { return "pt1", true }
	op := e.reboot(fakeapi.RebootSpec{Reason: "r"})
	var refused *realtime.RefusedError
	if err := h.HandleReboot(context.Background(), op); !errors.As(err, &refused) || !strings.Contains(refused.Reason, "patch operation pt1 is running") {
		t.Errorf("patch running: %v", err)
	}
	h.PatchRunning = nil
	for _, bad := range []nannyapi.RebootOperation{
		{ID: op.ID, LXCID: "7sfzjqlwhc0ptu5"},
		{ID: op.ID, VMID: "12"},
		{ID: op.ID, VMID: "100; reboot"},
	} {
		if err := h.HandleReboot(context.Background(), bad); !errors.As(err, &refused) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	e.broker.err = status.Error(codes.Unavailable, "connection refused")
	if err := h.HandleReboot(context.Background(), op); !errors.As(err, &refused) || !strings.Contains(refused.Reason, "could not be asked") {
		t.Errorf("broker down: %v", err)
	}
	if len(e.broker.requests()) != 1 || e.fake.Hits(fakeapi.RouteRebootAck) != 0 {
		t.Errorf("broker %v, acks %d", e.broker.requests(), e.fake.Hits(fakeapi.RouteRebootAck))
	}
}

// A container reboot that succeeds lifts the hold; the next heartbeat
// completes the record at the monitor's tick.
func TestContainerRebootResumesHeartbeats(t *testing.T) {
	e := newEnv(t, fakeapi.Options{RebootMonitorInterval: -1})
	h := e.hold(time.Second)
	op := e.reboot(fakeapi.RebootSpec{Reason: "LXC restart", LXCID: "7sfzjqlwhc0ptu5", VMID: "105"})
	if err := e.handler(h).HandleReboot(context.Background(), op); err != nil {
		t.Fatal(err)
	}
	reqs := e.broker.requests()
	if len(reqs) != 2 || !reqs[0].GetCheckOnly() || reqs[1].GetCheckOnly() || reqs[1].GetVmid() != "105" {
		t.Fatalf("broker %v", reqs)
	}
	if e.status(op.ID) != "rebooting" || len(e.acked) != 1 || e.metrics.pauses != 1 || e.metrics.isPaused() {
		t.Errorf("status %s acked %v pauses %d paused %v", e.status(op.ID), e.acked, e.metrics.pauses, e.metrics.isPaused())
	}
	if _, held := h.Current(); held {
		t.Error("hold kept")
	}
}

// A host reboot that started keeps heartbeats paused; after the host came
// back (boot time after the hold began) the new worker lifts it at once.
func TestHostRebootHoldsUntilTheHostIsBack(t *testing.T) {
	e := newEnv(t, fakeapi.Options{RebootMonitorInterval: -1})
	h := e.hold(time.Second)
	op := e.reboot(fakeapi.RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 300})
	if err := e.handler(h).HandleReboot(context.Background(), op); err != nil {
		t.Fatal(err)
	}
	st, held := h.Current()
	if !held || !e.metrics.isPaused() || st.RebootID != op.ID || !strings.Contains(st.Reason, "going down") {
		t.Fatalf("hold %+v %v", st, held)
	}
	if d := st.Until.Sub(st.Acknowledged); d != 302*time.Second {
		t.Errorf("cap %v after the acknowledge, want timeout + two ticks", d)
	}
	// The "host" rebooted: a new process on the same state.
	e.metrics = &heartbeats{}
	e.boot = time.Now()
	again := e.hold(time.Second)
	if !e.metrics.isPaused() {
		t.Fatal("a restarted worker did not hold heartbeats")
	}
	e.run(again)
	eventually(t, "the hold lifted after the boot", func() bool { return !e.metrics.isPaused() })
	if _, err := os.Stat(filepath.Join(e.dir, rebooting.HoldFile)); !os.IsNotExist(err) {
		t.Errorf("hold file left: %v", err)
	}
}

// A reboot command that fails after the acknowledge: the hold stays, also
// across a restart, until the record shows the backend's timeout; the
// record never becomes completed, although the worker would post
// heartbeats as soon as it is let.
func TestFailedRebootEndsInTimeout(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(map[bool]string{false: "same process", true: "across a restart"}[restart], func(t *testing.T) {
			e := newEnv(t, fakeapi.Options{RebootMonitorInterval: 20 * time.Millisecond})
			e.broker.perform = failing
			h := e.hold(20 * time.Millisecond)
			op := e.reboot(fakeapi.RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 1})
			err := e.handler(h).HandleReboot(context.Background(), op)
			var failed *realtime.FailedError
			if !errors.As(err, &failed) || !strings.Contains(failed.Reason, "the reboot command failed: /usr/bin/systemctl reboot exited with status 1: Failed to reboot") {
				t.Fatalf("err %v", err)
			}
			if restart {
				e.metrics = &heartbeats{}
				h = e.hold(20 * time.Millisecond)
			}
			e.run(h)
			// While held, a heartbeat would complete the record: post one
			// whenever the fake loop is not paused, as the real loop does.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
					if !e.metrics.isPaused() {
						_ = e.client.IngestMetrics(context.Background(), sample())
					}
				}
			})
			eventually(t, "the backend's timeout", func() bool { return e.status(op.ID) == "timeout" })
			eventually(t, "heartbeats resumed", func() bool { return !e.metrics.isPaused() })
			close(stop)
			wg.Wait()
			if hist := strings.Join(e.fake.RebootHistory(op.ID), ","); hist != "sent,rebooting,timeout" {
				t.Errorf("history %s", hist)
			}
		})
	}
}

// Without any answer from the backend, the hold ends at its cap.
func TestHoldEndsAtItsCap(t *testing.T) {
	e := newEnv(t, fakeapi.Options{RebootMonitorInterval: -1})
	e.broker.perform = failing
	h := e.hold(50 * time.Millisecond)
	op := e.reboot(fakeapi.RebootSpec{Reason: "r", TimeoutSeconds: 1})
	start := time.Now()
	_ = e.handler(h).HandleReboot(context.Background(), op)
	e.run(h)
	eventually(t, "the cap", func() bool { return !e.metrics.isPaused() })
	if took := time.Since(start); took < time.Second {
		t.Errorf("hold lifted after %v, before timeout_seconds", took)
	}
	if e.status(op.ID) != "rebooting" {
		t.Errorf("status %s", e.status(op.ID))
	}
}

// A failed acknowledge may still have reached the backend: the hold stays.
func TestAcknowledgeFailureKeepsTheHold(t *testing.T) {
	e := newEnv(t, fakeapi.Options{RebootMonitorInterval: -1})
	e.fake.Fail(fakeapi.RouteRebootAck, 500, 0, `{"error":"boom"}`)
	h := e.hold(time.Second)
	op := e.reboot(fakeapi.RebootSpec{Reason: "r", TimeoutSeconds: 60})
	err := e.handler(h).HandleReboot(context.Background(), op)
	var failed *realtime.FailedError
	if !errors.As(err, &failed) || !strings.Contains(failed.Reason, "the acknowledge failed") {
		t.Fatalf("err %v", err)
	}
	if _, held := h.Current(); !held || !e.metrics.isPaused() || len(e.broker.requests()) != 1 {
		t.Errorf("held %v paused %v broker %v", held, e.metrics.isPaused(), e.broker.requests())
	}
	// The stream's update that the backend gave up ends it.
	h.Changed(nannyapi.RebootOperation{ID: op.ID, Status: "rebooting"})
	if !e.metrics.isPaused() {
		t.Error("released on an update that is not final")
	}
	h.Changed(nannyapi.RebootOperation{ID: "other", Status: "timeout"})
	h.Changed(nannyapi.RebootOperation{ID: op.ID, Status: "timeout"})
	if e.metrics.isPaused() {
		t.Error("still held after the timeout update")
	}
}

func TestUnreadableHoldFileHoldsForTheLongest(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	if err := os.WriteFile(filepath.Join(e.dir, rebooting.HoldFile), []byte(`{"reboot_id":`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := e.hold(time.Second)
	st, held := h.Current()
	if !held || !e.metrics.isPaused() || st.Until.Sub(st.Since) != time.Hour || !strings.Contains(st.Reason, "unreadable") {
		t.Errorf("hold %+v %v", st, held)
	}
	if _, err := os.Stat(filepath.Join(e.dir, rebooting.HoldFile+".corrupt")); err != nil {
		t.Errorf("not set aside: %v", err)
	}
}

func FuzzDecodeHold(f *testing.F) {
	f.Add([]byte(`{"reboot_id":"rb1","since":"2026-11-25T21:00:00Z","until":"2026-11-25T21:05:00Z","reason":"r"}`))
	f.Add([]byte(`{"reboot_id":"rb1","vmid":"105","since":"2026-11-25T21:00:00Z","acknowledged":"2026-11-25T21:00:01Z","until":"2026-11-25T21:05:00Z","reason":"r"}`))
	f.Add([]byte(`{"reboot_id":"rb1","since":"2026-11-25T21:05:00Z","until":"2026-11-25T21:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := rebooting.DecodeHold(data)
		if err == nil && (!nannyapi.ValidID(st.RebootID) || st.Until.Before(st.Since) || st.Since.IsZero()) {
			t.Fatalf("accepted %+v", st)
		}
	})
}

func sample() nannyapi.MetricsReport {
	return nannyapi.MetricsReport{PlatformFamily: "debian", Version: "test"}
}

// A long reason (a failed command's output) is clipped when the hold is
// written, so the next start reads the hold back for its reboot instead of
// setting the file aside as corrupt.
func TestLongReasonSurvivesARestart(t *testing.T) {
	e := newEnv(t, fakeapi.Options{RebootMonitorInterval: -1})
	h := e.hold(time.Second)
	op := e.reboot(fakeapi.RebootSpec{Reason: "r", TimeoutSeconds: 60})
	if err := h.Begin(op); err != nil {
		t.Fatal(err)
	}
	h.Keep(op.ID, strings.Repeat("output line ", 500))
	again := e.hold(time.Second)
	st, held := again.Current()
	if !held || st.RebootID != op.ID || len(st.Reason) > 2048 || !strings.HasPrefix(st.Reason, "output line") {
		t.Errorf("after a restart: held %v, %+v", held, st)
	}
}
