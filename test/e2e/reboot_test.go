package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// rebootWorker shortens the worker's reboot waits: the backend's monitor
// ticks every 200ms here, the held record is read every 100ms.
var rebootWorker = append(append([]string{}, fastWorker...), "--reboot-monitor-interval", "200ms", "--reboot-poll-interval", "100ms")

const monitorTick = 200 * time.Millisecond

// rebootTools writes fake systemctl, pct and wall into a root-owned
// directory (the broker runs only root-owned programs); each appends its
// argv to calls.log, its cgroups to cgroups.log, and exits with its code.
func rebootTools(t *testing.T, systemctlExit, pctExit int) (dir string, calls func() []string) {
	t.Helper()
	requireRoot(t)
	dir, err := stack.WorldReadableTempDir("nannyagent-reboot-tools-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	logPath := filepath.Join(dir, "calls.log")
	for name, code := range map[string]int{"systemctl": systemctlExit, "pct": pctExit, "wall": 0} {
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >> %s\necho \"%s $(tr '\\n' ' ' < /proc/self/cgroup)\" >> %s\n[ %d = 0 ] || echo \"%s: failed on purpose\" >&2\nexit %d\n",
			name, logPath, name, filepath.Join(dir, "cgroups.log"), code, name, code)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, func() []string {
		data, err := os.ReadFile(logPath)
		if err != nil {
			return nil
		}
		return strings.Split(strings.TrimSpace(string(data)), "\n")
	}
}

func rebootsPolicy(tools, settings string) string {
	return realtimePolicy + fmt.Sprintf(`reboots:
  enabled: true
  systemctl: %[1]s/systemctl
  pct: %[1]s/pct
  wall: %[1]s/wall
  min_uptime: 0s
%[2]s`, tools, settings)
}

// rebootStack is a registered worker whose fake backend runs the reboot
// monitor every monitorTick.
func rebootStack(t *testing.T, policy string) (*fakeapi.Server, *stack.Stack, fakeapi.AgentCredentials) {
	t.Helper()
	srv := startFake(t, fakeapi.Options{RebootMonitorInterval: monitorTick})
	creds := srv.AddAgent("", "rt-host", "debian")
	s := startStack(t, stack.Options{APIURL: srv.URL(), Policy: policy, ExtraWorkerArgs: rebootWorker,
		BeforeWorker: referenceToken(creds, false)})
	waitRebootSubscribed(t, srv, s, creds.ID)
	return srv, s, creds
}

func waitRebootSubscribed(t *testing.T, srv *fakeapi.Server, s *stack.Stack, agentID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer cancel()
	if _, err := srv.WaitSubscribed(ctx, agentID, "reboot_operations"); err != nil {
		t.Fatalf("the worker did not subscribe to reboot_operations: %v\n%s", err, s.WorkerProcess().Log())
	}
}

func createReboot(t *testing.T, srv *fakeapi.Server, agentID string, spec fakeapi.RebootSpec) string {
	t.Helper()
	id, err := srv.CreateReboot(agentID, spec)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// logLines are the worker's JSON log entries with msg.
func logLines(log, msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// waitLog waits for a worker log entry with msg whose id is id.
func waitLog(t *testing.T, s *stack.Stack, msg, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range logLines(s.WorkerProcess().Log(), msg) {
			if m["id"] == id {
				return m
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the worker never logged %q for %s:\n%s", msg, id, s.WorkerProcess().Log())
	return nil
}

func waitRebootStatus(t *testing.T, srv *fakeapi.Server, id, status string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := srv.WaitRecord(ctx, "reboot_operations", id, func(r map[string]any) bool { return r["status"] == status }); err != nil {
		rec, _ := srv.Record("reboot_operations", id)
		t.Fatalf("reboot %s never became %q: %v (history %v)", id, status, rec, srv.RebootHistory(id))
	}
}

// opEntry reads the worker's operation record (its status data) as the
// operator would: a copy of operations.json, decoded.
func opEntry(t *testing.T, s *stack.Stack, id string) opstate.Entry {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.StateDir, opstate.FileName))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := opstate.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range snap.Entries {
		if e.Kind == opstate.Reboot && e.ID == id {
			return e
		}
	}
	t.Fatalf("no record of reboot %s in %s", id, data)
	return opstate.Entry{}
}

func rebootDecisions(t *testing.T, s *stack.Stack) []map[string]any {
	var out []map[string]any
	for _, d := range decisionLines(t, s.BrokerProcess().Log()) {
		if d["rpc"] == "Reboot" {
			out = append(out, d)
		}
	}
	return out
}

// The default policy refuses: nothing is acknowledged, the refusal is
// logged with the operation id and the reason, kept in the worker's
// operation record and shown by `nannyagent status`. A reboot of another
// agent that a hostile backend pushes onto this agent's stream is ignored:
// the broker is not even asked.
func TestRebootRefusedByDefaultPolicy(t *testing.T) {
	srv, s, creds := rebootStack(t, realtimePolicy)
	other := srv.AddAgent("", "other-host", "debian")
	foreign := createReboot(t, srv, other.ID, fakeapi.RebootSpec{Reason: "not yours", TimeoutSeconds: 120})
	if err := srv.EmitToAgent(creds.ID, "reboot_operations", foreign, "create"); err != nil {
		t.Fatal(err)
	}
	id := createReboot(t, srv, creds.ID, fakeapi.RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 120})

	line := waitLog(t, s, "operation not run", id)
	if line["kind"] != "reboot" || line["reason"] != "refused by the broker: reboots: reboots are disabled by policy" {
		t.Errorf("log line %v", line)
	}
	waitLog(t, s, "record of another agent ignored", foreign)
	e := opEntry(t, s, id)
	if e.State != opstate.Skipped || e.Note != "refused by the broker: reboots: reboots are disabled by policy" || !e.Acknowledged.IsZero() {
		t.Errorf("operation record %+v", e)
	}
	res := s.CLI(ctxT(t), nil, "status")
	// Once, among the recent operations: not again as a warning.
	if !strings.Contains(res.Stdout, "  "+id+"  SKIPPED") || strings.Count(res.Stdout, "reboots are disabled by policy") != 1 {
		t.Errorf("status does not show the refusal once:\n%s%s", res.Stdout, res.Stderr)
	}
	if n := srv.Hits(fakeapi.RouteRebootAck); n != 0 {
		t.Errorf("%d acknowledges", n)
	}
	for _, rid := range []string{id, foreign} {
		if rec, _ := srv.Record("reboot_operations", rid); rec["status"] != "sent" {
			t.Errorf("record %s: %v", rid, rec)
		}
	}
	ds := rebootDecisions(t, s)
	if len(ds) != 1 || ds[0]["decision"] != "deny" || ds[0]["reason"] != "reboots: reboots are disabled by policy" {
		t.Errorf("broker decisions %v: want exactly one refusal, none for the foreign reboot", ds)
	}
	// The observed backend has no /fail: the report was tried and only logged.
	waitLog(t, s, "the backend cannot take this report; it is only logged", id)
}

// A reboot older than its timeout, found by the catch-up after a long
// disconnect, is not run even though the policy allows reboots.
func TestStaleRebootFromCatchUpIsNotRun(t *testing.T) {
	tools, calls := rebootTools(t, 0, 0)
	clock := fakeapi.NewClock(time.Now().Add(-time.Hour))
	srv := startFake(t, fakeapi.Options{Now: clock.Now, RebootMonitorInterval: -1})
	creds := srv.AddAgent("", "rt-host", "debian")
	stale := createReboot(t, srv, creds.ID, fakeapi.RebootSpec{Reason: "requested an hour ago", TimeoutSeconds: 120})
	clock.Advance(time.Hour)
	s := startStack(t, stack.Options{APIURL: srv.URL(), Policy: rebootsPolicy(tools, "  host: true\n"),
		ExtraWorkerArgs: rebootWorker, BeforeWorker: referenceToken(creds, false)})
	line := waitLog(t, s, "operation not run", stale)
	if !strings.Contains(line["reason"].(string), "its deadline") || !strings.Contains(line["reason"].(string), "has passed") {
		t.Errorf("log line %v", line)
	}
	if got := calls(); got != nil {
		t.Errorf("ran %q", got)
	}
	if ds := rebootDecisions(t, s); len(ds) != 0 || srv.Hits(fakeapi.RouteRebootAck) != 0 {
		t.Errorf("broker asked %v, %d acknowledges", ds, srv.Hits(fakeapi.RouteRebootAck))
	}
}

// An allowed container reboot runs `pct reboot VMID` after warning users;
// heartbeats resume when pct exits 0, so the backend completes it. A vmid
// the policy does not name is refused.
func TestContainerReboot(t *testing.T) {
	tools, calls := rebootTools(t, 0, 0)
	srv, s, creds := rebootStack(t, rebootsPolicy(tools, "  containers: ['105']\n"))
	id := createReboot(t, srv, creds.ID, fakeapi.RebootSpec{Reason: "LXC restart", LXCID: "7sfzjqlwhc0ptu5", VMID: "105"})
	waitRebootStatus(t, srv, id, "completed", 9*time.Second)
	want := "wall nannyagent: NannyAI reboot " + id + " requested by the operator: container 105 reboots now. Reason: LXC restart\npct reboot 105"
	if got := strings.Join(calls(), "\n"); got != want {
		t.Errorf("ran\n%s\nwant\n%s", got, want)
	}
	if e := opEntry(t, s, id); e.State != opstate.Done || e.Acknowledged.IsZero() {
		t.Errorf("operation record %+v", e)
	}
	// Both started through the broker's launcher: each in a run cgroup
	// of its own.
	cg, err := os.ReadFile(filepath.Join(tools, "cgroups.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(cg)), "\n")
	if len(lines) != 2 {
		t.Fatalf("cgroups of the tools: %q", lines)
	}
	for _, l := range lines {
		if !strings.Contains(l, "/nannyagent-exec/run-") {
			t.Errorf("not started by the launcher: %s", l)
		}
	}

	other := createReboot(t, srv, creds.ID, fakeapi.RebootSpec{Reason: "LXC restart", LXCID: "8sfzjqlwhc0ptu5", VMID: "106"})
	line := waitLog(t, s, "operation not run", other)
	if !strings.Contains(line["reason"].(string), "container 106 is not among the vmids the policy allows to reboot (105)") {
		t.Errorf("log line %v", line)
	}
	if got := calls(); len(got) != 2 {
		t.Errorf("ran %q", got)
	}
}

// A host reboot (a fake systemctl) pauses heartbeats from before the
// acknowledge: the host never comes back here, so the backend times the
// reboot out instead of completing it. The broker's loop guard then
// refuses a second host reboot inside min_interval, also after the broker
// restarted.
func TestHostRebootPausesMetricsAndTheLoopGuardHolds(t *testing.T) {
	tools, calls := rebootTools(t, 0, 0)
	srv, s, creds := rebootStack(t, rebootsPolicy(tools, "  host: true\n  min_interval: 1h\n"))
	waitMetrics(t, srv, creds.ID, 1)
	id := createReboot(t, srv, creds.ID, fakeapi.RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 6})
	waitRebootStatus(t, srv, id, "rebooting", 9*time.Second)
	waitRebootStatus(t, srv, id, "timeout", 9*time.Second)
	rec, _ := srv.Record("reboot_operations", id)
	acked := parsePB(t, rec["acknowledged_at"])
	for _, m := range srv.Metrics() {
		if m.AgentID == creds.ID && m.At.Truncate(time.Millisecond).After(acked) {
			t.Errorf("a heartbeat at %s, after the acknowledge at %s", m.At, acked)
		}
	}
	if got := calls(); len(got) != 2 || got[1] != "systemctl reboot" {
		t.Errorf("ran %q", got)
	}
	if h := strings.Join(srv.RebootHistory(id), ","); h != "sent,rebooting,timeout" {
		t.Errorf("history %s", h)
	}
	// The backend gave up: heartbeats resume.
	waitMetricsAfter(t, srv, creds.ID, time.Now())

	if err := s.StopBroker(); err != nil {
		t.Fatal(err)
	}
	if err := s.StartBroker(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitBrokerReachable(t, s)
	second := createReboot(t, srv, creds.ID, fakeapi.RebootSpec{Reason: "again", TimeoutSeconds: 60})
	line := waitLog(t, s, "operation not run", second)
	if !strings.Contains(line["reason"].(string), "the last host reboot ("+id+") was started at") ||
		!strings.Contains(line["reason"].(string), "the policy allows one every 1h0m0s (min_interval)") {
		t.Errorf("log line %v", line)
	}
	if got := calls(); len(got) != 2 {
		t.Errorf("ran %q", got)
	}
	if rec, _ := srv.Record("reboot_operations", second); rec["status"] != "sent" {
		t.Errorf("second reboot %v", rec)
	}
}

// A reboot command that fails after the acknowledge ends "timeout" on the
// backend's monitor, never "completed": heartbeats stay paused until the
// record shows the timeout, also when the worker is killed and restarted
// in between (a restarted worker posts a heartbeat at once otherwise).
func TestFailedRebootEndsInTimeout(t *testing.T) {
	tools, calls := rebootTools(t, 1, 0)
	srv, s, creds := rebootStack(t, rebootsPolicy(tools, "  host: true\n  min_interval: 0s\n"))
	for _, restart := range []bool{false, true} {
		id := createReboot(t, srv, creds.ID, fakeapi.RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 6})
		line := waitLog(t, s, "operation failed", id)
		if !strings.Contains(line["error"].(string), "systemctl reboot exited with status 1: systemctl: failed on purpose") {
			t.Errorf("log line %v", line)
		}
		if restart {
			s.KillWorker()
			if err := s.StartWorker(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			waitRebootSubscribed(t, srv, s, creds.ID)
		}
		waitRebootStatus(t, srv, id, "timeout", 9*time.Second)
		if h := strings.Join(srv.RebootHistory(id), ","); h != "sent,rebooting,timeout" {
			t.Errorf("restart %v: history %s", restart, h)
		}
		rec, _ := srv.Record("reboot_operations", id)
		if rec["error_message"] != "Agent did not reconnect within timeout period" {
			t.Errorf("record %v", rec)
		}
		waitMetricsAfter(t, srv, creds.ID, time.Now())
	}
	if got := calls(); len(got) != 4 {
		t.Errorf("ran %q", got)
	}
}

func parsePB(t *testing.T, v any) time.Time {
	t.Helper()
	at, err := time.Parse("2006-01-02 15:04:05.000Z", fmt.Sprint(v))
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// waitMetricsAfter waits for a heartbeat of agentID after since.
func waitMetricsAfter(t *testing.T, srv *fakeapi.Server, agentID string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range srv.Metrics() {
			if m.AgentID == agentID && m.At.After(since) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no heartbeat after %s", since)
}

func waitBrokerReachable(t *testing.T, s *stack.Stack) {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		res := s.CLI(ctxT(t), nil, "status")
		if res.Code == 0 && !strings.Contains(res.Stdout, "UNREACHABLE") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the worker does not reach the restarted broker")
}
