package fakeapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// sseStream reads raw SSE frames (text up to a blank line) into a channel.
type sseStream struct {
	body   io.ReadCloser
	frames chan string
	done   chan struct{}
	once   sync.Once
}

func openStream(t *testing.T, s *Server) *sseStream {
	t.Helper()
	resp, err := http.Get(s.URL() + "/api/realtime")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("connect: %d %v", resp.StatusCode, resp.Header)
	}
	st := &sseStream{body: resp.Body, frames: make(chan string, 64), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		defer close(st.frames)
		r := bufio.NewReader(resp.Body)
		var b strings.Builder
		for {
			line, err := r.ReadString('\n')
			b.WriteString(line)
			if err != nil {
				return
			}
			if line == "\n" {
				st.frames <- b.String()
				b.Reset()
			}
		}
	}()
	t.Cleanup(st.close)
	return st
}

func (st *sseStream) close() {
	st.once.Do(func() { _ = st.body.Close() })
	<-st.done
}

func (st *sseStream) next(t *testing.T) string {
	t.Helper()
	select {
	case f, ok := <-st.frames:
		if !ok {
			t.Fatal("stream ended")
		}
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no frame within 5s")
		return ""
	}
}

var connectFrame = regexp.MustCompile(`^id:([A-Za-z0-9]{40})\nevent:PB_CONNECT\ndata:\{"clientId":"([A-Za-z0-9]{40})"\}\n\n$`)

func (st *sseStream) clientID(t *testing.T) string {
	t.Helper()
	f := st.next(t)
	m := connectFrame.FindStringSubmatch(f)
	if m == nil || m[1] != m[2] {
		t.Fatalf("connect frame not verbatim: %q", f)
	}
	return m[1]
}

func subscribe(t *testing.T, s *Server, clientID, token string, topics ...string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"clientId": clientID, "subscriptions": topics})
	return send(t, s, rawReq{method: "POST", path: "/api/realtime", ctype: "application/json", token: token, body: string(body)})
}

type eventFrame struct {
	ID, Event string
	Record    map[string]any
	Action    string
}

func parseFrame(t *testing.T, f string) eventFrame {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(f, "\n\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "id:") || !strings.HasPrefix(lines[1], "event:") || !strings.HasPrefix(lines[2], "data:") {
		t.Fatalf("frame shape: %q", f)
	}
	var data struct {
		Record map[string]any `json:"record"`
		Action string         `json:"action"`
	}
	raw := strings.TrimPrefix(lines[2], "data:")
	if !strings.HasPrefix(raw, `{"record":{`) {
		t.Fatalf("data does not start with the record: %q", raw)
	}
	if err := json.Unmarshal([]byte(raw), &data); err != nil {
		t.Fatal(err)
	}
	return eventFrame{ID: strings.TrimPrefix(lines[0], "id:"), Event: strings.TrimPrefix(lines[1], "event:"), Record: data.Record, Action: data.Action}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sameKeys(t *testing.T, what string, got map[string]any, verbatim string) {
	t.Helper()
	var want map[string]any
	if err := json.Unmarshal([]byte(verbatim), &want); err != nil {
		t.Fatal(err)
	}
	if g, w := strings.Join(keys(got), ","), strings.Join(keys(want), ","); g != w {
		t.Errorf("%s keys\ngot  %s\nwant %s", what, g, w)
	}
}

// Records as nannyapi-backend.md shows them in create frames.
const (
	docInvestigation = `{"agent_id":"6ybfg6bq7mxtjoj","collectionId":"pbc_59972043","collectionName":"investigations","completed_at":"","episode_id":"","id":"8vdpgwejcaa7p3q","initiated_at":"2026-11-25 21:40:25.847Z","metadata":{"initiated_by":"user"},"priority":"high","resolution_plan":"","status":"pending","user_id":"9a28tbg81y2935k","user_prompt":"High CPU usage on process mysqld, slow queries"}`
	docPatch         = `{"agent_id":"6ybfg6bq7mxtjoj","collectionId":"pbc_2550880806","collectionName":"patch_operations","completed_at":"","error_msg":"","exclusions":["linux-image-generic"],"exit_code":0,"id":"dc1h4ypytwvcu0e","lxc_id":"","mode":"dry-run","output_path":"","script_id":"nl52d78j6pgcswd","script_url":"/api/files/pbc_1280174292/nl52d78j6pgcswd/apt_update_0m7hixffos.sh","started_at":"","status":"pending","stderr_file":"","stdout_file":"","user_id":"9a28tbg81y2935k","vmid":""}`
	docReboot        = `{"acknowledged_at":"","agent_id":"6ybfg6bq7mxtjoj","collectionId":"pbc_3109392152","collectionName":"reboot_operations","completed_at":"","error_message":"","id":"6c1av7nfmxl556j","lxc_id":"","reason":"Kernel update applied","requested_at":"2026-11-25 21:41:12.007Z","status":"sent","timeout_seconds":120,"user_id":"9a28tbg81y2935k","vmid":""}`
)

var pbTimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$`)

func TestRealtimeFramesAndOwnership(t *testing.T) {
	clock := NewClock(time.Now())
	s := New(Options{Now: clock.Now, RebootMonitorInterval: -1, AI: NewScriptedAI(Diagnostic("need data", "uptime"), Resolution("idle", "1. Nothing."))})
	defer s.Close()
	a := s.AddAgent("", "a", "debian")
	b := s.AddAgent("", "b", "debian")
	st := openStream(t, s)
	id := st.clientID(t)
	if code, body := subscribe(t, s, id, a.AccessToken, "investigations", "patch_operations", "reboot_operations", "sbom_scans"); code != 204 || body != "" {
		t.Fatalf("subscribe: %d %q", code, body)
	}
	// Agent b's record comes first and must not reach a's stream.
	if _, err := s.CreateInvestigation(b.ID, "Not for agent a at all", "low"); err != nil {
		t.Fatal(err)
	}
	invID, err := s.CreateInvestigation(a.ID, "High CPU usage on process mysqld, slow queries", "high")
	if err != nil {
		t.Fatal(err)
	}
	ev := parseFrame(t, st.next(t))
	if ev.ID != id || ev.Event != "investigations" || ev.Action != "create" || ev.Record["id"] != invID {
		t.Fatalf("frame %+v", ev)
	}
	sameKeys(t, "investigation", ev.Record, docInvestigation)
	if !pbTimeRE.MatchString(ev.Record["initiated_at"].(string)) {
		t.Errorf("initiated_at %v", ev.Record["initiated_at"])
	}

	patchID, err := s.CreatePatch(a.ID, PatchSpec{Mode: "dry-run", Exclusions: []string{"linux-image-generic"}})
	if err != nil {
		t.Fatal(err)
	}
	ev = parseFrame(t, st.next(t))
	if ev.Event != "patch_operations" || ev.Record["id"] != patchID || ev.Record["status"] != "pending" {
		t.Fatalf("patch frame %+v", ev)
	}
	sameKeys(t, "patch", ev.Record, docPatch)
	if !regexp.MustCompile(`^/api/files/pbc_1280174292/[a-z0-9]{15}/apt_update_[a-z0-9]{10}\.sh$`).MatchString(ev.Record["script_url"].(string)) {
		t.Errorf("script_url %v", ev.Record["script_url"])
	}
	noExcl, _ := s.CreatePatch(a.ID, PatchSpec{Mode: "apply"})
	ev = parseFrame(t, st.next(t))
	if ev.Record["id"] != noExcl || ev.Record["exclusions"] != nil {
		t.Errorf("exclusions without exceptions must be null: %+v", ev.Record)
	}

	rbID, err := s.CreateReboot(a.ID, RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 120})
	if err != nil {
		t.Fatal(err)
	}
	ev = parseFrame(t, st.next(t))
	if ev.Event != "reboot_operations" || ev.Record["id"] != rbID || ev.Record["status"] != "sent" || ev.Record["timeout_seconds"] != float64(120) {
		t.Fatalf("reboot frame %+v", ev)
	}
	sameKeys(t, "reboot", ev.Record, docReboot)
	if !pbTimeRE.MatchString(ev.Record["requested_at"].(string)) {
		t.Errorf("requested_at %v", ev.Record["requested_at"])
	}

	// A proxy turn: first round sets episode_id and in_progress, the
	// resolution completes the investigation; each is an update frame.
	turn := func() {
		code, body := send(t, s, rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", token: a.AccessToken,
			body: `{"model":"m","messages":[{"role":"user","content":"Issue: High CPU"}],"investigation_id":"` + invID + `"}`})
		if code != 200 {
			t.Fatalf("turn: %d %s", code, body)
		}
	}
	turn()
	ev = parseFrame(t, st.next(t))
	if ev.Action != "update" || ev.Record["status"] != "in_progress" || ev.Record["episode_id"] == "" {
		t.Fatalf("first round frame %+v", ev)
	}
	turn()
	ev = parseFrame(t, st.next(t))
	if ev.Record["status"] != "completed" || ev.Record["resolution_plan"] != "1. Nothing." || !pbTimeRE.MatchString(ev.Record["completed_at"].(string)) {
		t.Fatalf("resolution frame %+v", ev)
	}

	// Acknowledge; the monitor's next tick after a metrics post completes
	// the reboot.
	if code, body := send(t, s, rawReq{method: "POST", path: "/api/reboot/" + rbID + "/acknowledge", token: a.AccessToken}); code != 200 ||
		body != `{"success":true,"message":"Reboot acknowledged. Agent should proceed with reboot."}` {
		t.Fatalf("ack: %d %s", code, body)
	}
	ev = parseFrame(t, st.next(t))
	if ev.Record["status"] != "rebooting" || !pbTimeRE.MatchString(ev.Record["acknowledged_at"].(string)) {
		t.Fatalf("ack frame %+v", ev)
	}
	clock.Advance(time.Second)
	if code, _ := send(t, s, agentPost(validMetrics, a.AccessToken)); code != 200 {
		t.Fatal("metrics")
	}
	s.RunRebootMonitor()
	ev = parseFrame(t, st.next(t))
	if ev.Record["status"] != "completed" || ev.Record["completed_at"] == "" {
		t.Fatalf("completion frame %+v", ev)
	}

	// The agent's own investigation is echoed back as create, initiated_by agent.
	code, body := send(t, s, rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", token: a.AccessToken,
		body: `{"agent_id":"` + a.ID + `","issue":"Disk is filling up fast","priority":"medium"}`})
	if code != 201 || !strings.Contains(body, `"metadata":{"initiated_by":"agent"}`) || !strings.Contains(body, `"completed_at":null`) {
		t.Fatalf("agent create: %d %s", code, body)
	}
	ev = parseFrame(t, st.next(t))
	if ev.Action != "create" || ev.Record["metadata"].(map[string]any)["initiated_by"] != "agent" {
		t.Fatalf("echo %+v", ev)
	}
}

func TestRealtimeSubscribeRules(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	a := s.AddAgent("", "a", "debian")
	b := s.AddAgent("", "b", "debian")
	good, bad := openStream(t, s), openStream(t, s)
	goodID, badID := good.clientID(t), bad.clientID(t)
	if code, _ := subscribe(t, s, goodID, a.AccessToken, "investigations"); code != 204 {
		t.Fatal(code)
	}
	if code, body := subscribe(t, s, badID, "garbage-token", "investigations"); code != 204 || body != "" {
		t.Fatalf("garbage token: %d %q, want 204", code, body)
	}
	if _, err := s.CreateInvestigation(a.ID, "Something for the good client", "low"); err != nil {
		t.Fatal(err)
	}
	_ = good.next(t)
	for _, c := range s.Clients() {
		if c.ID == badID && (c.Queued != 0 || c.Delivered != 0) {
			t.Errorf("garbage-token client got events: %+v", c)
		}
	}
	// Re-subscribing with another agent's token is refused; the same agent is fine.
	if code, body := subscribe(t, s, goodID, b.AccessToken, "investigations"); code != 403 ||
		body != `{"data":{},"message":"The current and the previous request authorization don't match.","status":403}` {
		t.Errorf("different token: %d %s", code, body)
	}
	if code, _ := subscribe(t, s, goodID, a.AccessToken, "patch_operations"); code != 204 {
		t.Errorf("same token: %d", code)
	}
	// StopDelivery mutes a client.
	s.StopDelivery(goodID)
	if _, err := s.CreatePatch(a.ID, PatchSpec{Mode: "dry-run"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Clients() {
		if c.ID == goodID && c.Queued+c.Delivered != 1 {
			t.Errorf("muted client got more: %+v", c)
		}
	}
	// DropStreams ends both streams.
	s.DropStreams()
	for _, st := range []*sseStream{good, bad} {
		select {
		case <-st.done:
		case <-time.After(5 * time.Second):
			t.Fatal("stream not dropped")
		}
	}
}

func TestRealtimeIdleClose(t *testing.T) {
	s := New(Options{IdleTimeout: 150 * time.Millisecond})
	defer s.Close()
	st := openStream(t, s)
	_ = st.clientID(t)
	select {
	case f, ok := <-st.frames:
		if ok {
			t.Fatalf("idle stream sent %q, want a clean end without a closing frame", f)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle stream not closed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.waitFor(ctx, func() bool { return len(s.st.clients) == 0 }); err != nil {
		t.Fatal("client not removed")
	}
}
