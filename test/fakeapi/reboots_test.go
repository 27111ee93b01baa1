package fakeapi

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The monitor, as the backend's: a sent reboot times out timeout_seconds
// after requested_at; an acknowledged one is completed once last_seen
// passes acknowledged_at, and times out timeout_seconds after
// acknowledged_at when it does not. A metrics post alone completes nothing.
func TestRebootMonitor(t *testing.T) {
	clock := NewClock(time.Date(2026, 11, 25, 21, 41, 12, 7e6, time.UTC))
	s := New(Options{Now: clock.Now, RebootMonitorInterval: -1})
	defer s.Close()
	a := s.AddAgent("", "a", "debian")
	ack := func(id string) {
		t.Helper()
		if code, body := send(t, s, rawReq{method: "POST", path: "/api/reboot/" + id + "/acknowledge", token: a.AccessToken}); code != 200 {
			t.Fatalf("ack %d %s", code, body)
		}
	}
	status := func(id string) string {
		rec, _ := s.Record("reboot_operations", id)
		return rec["status"].(string)
	}

	// Never acknowledged: timeout after requested_at + timeout_seconds.
	unacked, _ := s.CreateReboot(a.ID, RebootSpec{Reason: "r", TimeoutSeconds: 60})
	clock.Advance(60 * time.Second)
	s.RunRebootMonitor()
	if st := status(unacked); st != "sent" {
		t.Fatalf("timed out at the deadline itself: %s", st)
	}
	clock.Advance(time.Millisecond)
	s.RunRebootMonitor()
	rec, _ := s.Record("reboot_operations", unacked)
	if rec["status"] != "timeout" || rec["error_message"] != "Agent did not acknowledge reboot command" {
		t.Fatalf("unacknowledged %v", rec)
	}

	// Acknowledged late in its window: the clock restarts at acknowledged_at.
	silent, _ := s.CreateReboot(a.ID, RebootSpec{Reason: "r", TimeoutSeconds: 60})
	clock.Advance(50 * time.Second)
	ack(silent)
	clock.Advance(59 * time.Second)
	s.RunRebootMonitor()
	if st := status(silent); st != "rebooting" {
		t.Fatalf("acknowledged reboot timed out from requested_at: %s", st)
	}
	clock.Advance(2 * time.Second)
	s.RunRebootMonitor()
	rec, _ = s.Record("reboot_operations", silent)
	if rec["status"] != "timeout" || rec["error_message"] != "Agent did not reconnect within timeout period" {
		t.Fatalf("silent %v", rec)
	}
	if h := strings.Join(s.RebootHistory(silent), ","); h != "sent,rebooting,timeout" {
		t.Errorf("history %s", h)
	}

	// Seen again after the acknowledge: completed at the next tick, not at the post.
	seen, _ := s.CreateReboot(a.ID, RebootSpec{Reason: "r", TimeoutSeconds: 60})
	ack(seen)
	clock.Advance(time.Second)
	if code, _ := send(t, s, agentPost(validMetrics, a.AccessToken)); code != 200 {
		t.Fatal("metrics")
	}
	if st := status(seen); st != "rebooting" {
		t.Fatalf("completed by the post itself, not the monitor: %s", st)
	}
	s.RunRebootMonitor()
	rec, _ = s.Record("reboot_operations", seen)
	if rec["status"] != "completed" || rec["completed_at"] == "" {
		t.Fatalf("seen %v", rec)
	}

	// GET /api/reboot/<id> shows the backend's model of it.
	code, body := send(t, s, rawReq{method: "GET", path: "/api/reboot/" + seen, token: a.AccessToken})
	var got map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil || got["status"] != "completed" || got["created_at"] != "0001-01-01T00:00:00Z" ||
		!strings.HasSuffix(got["requested_at"].(string), "Z") || got["acknowledged_at"] == nil || got["lxc_id"] != nil {
		t.Errorf("GET %d %s", code, body)
	}
}

// The ticker runs the monitor on its own.
func TestRebootMonitorTicks(t *testing.T) {
	s := New(Options{RebootMonitorInterval: 10 * time.Millisecond})
	defer s.Close()
	a := s.AddAgent("", "a", "debian")
	id, _ := s.CreateReboot(a.ID, RebootSpec{Reason: "r", TimeoutSeconds: 1})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if rec, _ := s.Record("reboot_operations", id); rec["status"] == "timeout" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the monitor never timed the reboot out")
}
