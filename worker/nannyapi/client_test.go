package nannyapi_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

func TestDeviceFlowCalls(t *testing.T) {
	s := newFake(t, fakeapi.Options{FrontendURL: "https://portal.example"})
	c := newClient(t, s.URL(), nannyapi.Config{})
	ctx := ctxT(t)
	da, err := c.DeviceAuthStart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(da.DeviceCode) != 32 || len(da.UserCode) != 8 || da.ExpiresIn != 600 ||
		da.VerificationURI != "https://portal.example/agent/authorize?user_code="+da.UserCode {
		t.Fatalf("device auth %+v", da)
	}
	_, err = c.Register(ctx, da.DeviceCode, sampleHost())
	if !nannyapi.HasMessage(err, 400, nannyapi.MsgDeviceNotAuthorized) {
		t.Fatalf("before approval: %v", err)
	}
	if err := s.Approve(da.UserCode); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Register(ctx, da.DeviceCode, sampleHost())
	if err != nil {
		t.Fatal(err)
	}
	if tok.AgentID == "" || tok.RefreshToken == "" || tok.ExpiresIn != 3600 || tok.TokenType != "" {
		t.Fatalf("token %v", tok)
	}
	host, _ := s.Agent(tok.AgentID)
	if host["version"] != "0.9.0-test" || host["kernel_version"] != "5.15.0-91-generic" || host["platform_family"] != "debian" {
		t.Errorf("host metadata not sent: %v", host)
	}
	_, err = c.Register(ctx, da.DeviceCode, sampleHost())
	if ae, ok := nannyapi.AsAPIError(err); !ok || ae.Message != nannyapi.MsgDeviceCodeUsed || ae.AgentID != tok.AgentID {
		t.Errorf("reused code: %v", err)
	}
	// refresh: no rotation, refresh_token "".
	r, err := c.Refresh(ctx, tok.RefreshToken)
	if err != nil || r.RefreshToken != "" || r.AccessToken == "" || r.AccessToken == tok.AccessToken || r.AgentID != tok.AgentID {
		t.Fatalf("refresh %v %v", r, err)
	}
	_, err = c.RenewRefreshToken(ctx, tok.RefreshToken)
	if !nannyapi.IsUnknownAction(err) {
		t.Errorf("renew on older backend: %v", err)
	}
	// Every /api/agent request carried Content-Type: application/json.
	for _, req := range s.Requests() {
		if req.Path == "/api/agent" && req.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s without json content type", req.Route)
		}
		if req.Header.Get("X-Agent-ID") != "" {
			t.Errorf("%s sent X-Agent-ID in oauth mode", req.Route)
		}
	}
}

func TestAgentCalls(t *testing.T) {
	ai := fakeapi.NewScriptedAI(fakeapi.Diagnostic("need data", "uptime"), fakeapi.Resolution("idle", "1. Nothing."))
	clock := fakeapi.NewClock(time.Now())
	s := newFake(t, fakeapi.Options{AI: ai, Now: clock.Now, RebootMonitorInterval: -1})
	ag := s.AddAgent("", "peer-test-01", "debian")
	other := s.AddAgent("", "peer-test-02", "debian")
	c := newClient(t, s.URL(), nannyapi.Config{}).WithCredentials(&bearer{token: ag.AccessToken})
	ctx := ctxT(t)

	if msg, err := c.Health(ctx); err != nil || msg != "API is healthy." {
		t.Errorf("health %q %v", msg, err)
	}
	if err := c.IngestMetrics(ctx, sampleMetrics()); err != nil {
		t.Fatal(err)
	}
	if got := s.Metrics(); len(got) != 1 || got[0].Body["platform_family"] != "debian" || got[0].Body["action"] != "ingest-metrics" {
		t.Errorf("metrics %v", got)
	}
	bad := sampleMetrics()
	bad.PlatformFamily = ""
	if err := c.IngestMetrics(ctx, bad); !errors.Is(err, nannyapi.ErrInvalidInput) {
		t.Errorf("empty platform_family: %v", err)
	}
	bad = sampleMetrics()
	bad.SystemMetrics.CPUPercent = 100.5
	if err := c.IngestMetrics(ctx, bad); !errors.Is(err, nannyapi.ErrInvalidInput) {
		t.Errorf("cpu over 100: %v", err)
	}
	if n := s.Hits(fakeapi.RouteIngestMetrics); n != 1 {
		t.Errorf("invalid metrics reached the server: %d hits", n)
	}

	// Investigation: create, AI turns, PATCH.
	created, err := c.CreateInvestigation(ctx, ag.ID, "High CPU usage on process mysqld", "")
	if err != nil {
		t.Fatal(err)
	}
	if created.Status != "pending" || created.Priority != "medium" || created.CompletedAt != nil {
		t.Errorf("created %+v", created)
	}
	msgs := []nannyapi.ChatMessage{{Role: "user", Content: "Issue: High CPU"}}
	turn, err := c.AITurn(ctx, created.ID, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(turn.Content(), `"response_type":"diagnostic"`) || turn.EpisodeID == "" {
		t.Errorf("turn %+v", turn)
	}
	msgs = append(msgs, nannyapi.ChatMessage{Role: "assistant", Content: turn.Content()}, nannyapi.ChatMessage{Role: "user", Content: "{}"})
	if _, err := c.AITurn(ctx, created.ID, msgs); err != nil {
		t.Fatal(err)
	}
	turns := s.AITurns()
	if len(turns) != 2 || len(turns[1].Messages) != 3 || turns[1].Messages[1].Role != "assistant" {
		t.Errorf("ai turns %+v", turns)
	}
	rec, _ := s.Record("investigations", created.ID)
	if rec["status"] != "completed" {
		t.Errorf("investigation %v", rec)
	}
	if err := c.UpdateInvestigation(ctx, created.ID, nannyapi.InvestigationUpdate{Status: nannyapi.StatusFailed, ResolutionPlan: "denied: x"}); err != nil {
		t.Fatal(err)
	}
	patches := s.InvestigationPatches()
	if len(patches) != 1 || len(patches[0].Body) != 2 || patches[0].Body["status"] != "failed" {
		t.Errorf("PATCH body must hold only status, resolution_plan, episode_id: %v", patches)
	}
	if err := c.UpdateInvestigation(ctx, created.ID, nannyapi.InvestigationUpdate{Status: "bogus"}); !errors.Is(err, nannyapi.ErrInvalidInput) {
		t.Errorf("bogus status: %v", err)
	}

	// Records API: own pending patches only.
	mine, _ := s.CreatePatch(ag.ID, fakeapi.PatchSpec{Mode: "dry-run", Exclusions: []string{"linux-image-generic"}})
	_, _ = s.CreatePatch(other.ID, fakeapi.PatchSpec{Mode: "dry-run"})
	ops, err := c.ListPatchOperations(ctx, nannyapi.RecordQuery{Status: "pending", AgentID: ag.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].ID != mine || ops[0].Exclusions[0] != "linux-image-generic" {
		t.Fatalf("patches %+v", ops)
	}
	if _, err := c.ListPatchOperations(ctx, nannyapi.RecordQuery{Status: "x' || agent_id!='"}); !errors.Is(err, nannyapi.ErrInvalidInput) {
		t.Errorf("filter injection: %v", err)
	}
	invs, err := c.ListInvestigations(ctx, nannyapi.RecordQuery{})
	if err != nil || len(invs) != 1 || !invs[0].InitiatedByAgent() {
		t.Errorf("investigations %+v %v", invs, err)
	}

	// Script: validate, download, compare.
	op := ops[0]
	info, err := c.ValidateScript(ctx, op.ScriptID)
	if err != nil {
		t.Fatal(err)
	}
	body, err := c.DownloadScript(ctx, op.ScriptURL)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != info.SHA256 || info.Name != "apt-update.sh" {
		t.Errorf("sha mismatch: %s vs %+v", hex.EncodeToString(sum[:]), info)
	}
	small := newClient(t, s.URL(), nannyapi.Config{MaxScriptBytes: 10}).WithCredentials(&bearer{token: ag.AccessToken})
	if _, err := small.DownloadScript(ctx, op.ScriptURL); !errors.Is(err, nannyapi.ErrTooLarge) {
		t.Errorf("size cap: %v", err)
	}

	// Patch status and results.
	if err := c.SetPatchStatus(ctx, op.ID, "running"); err != nil {
		t.Fatal(err)
	}
	if err := c.UploadPatchResult(ctx, op.ID, nannyapi.PatchResult{ExitCode: 0, Stdout: []byte("ok\n"), Stderr: []byte("")}); err != nil {
		t.Fatal(err)
	}
	lxcOp, _ := s.CreatePatch(ag.ID, fakeapi.PatchSpec{Mode: "apply", LXCID: "7sfzjqlwhc0ptu5", VMID: "100"})
	if err := c.UploadPatchResult(ctx, lxcOp, nannyapi.PatchResult{ExitCode: 2, LXCID: "7sfzjqlwhc0ptu5", Stderr: []byte("E: boom")}); err != nil {
		t.Fatal(err)
	}
	results := s.PatchResults()
	if len(results) != 2 {
		t.Fatalf("results %+v", results)
	}
	if f := results[0].Fields; f["exit_code"][0] != "0" || f["lxc_id"] != nil || string(results[0].Stdout) != "ok\n" ||
		results[0].StdoutName != "stdout.txt" || results[0].StderrName != "stderr.txt" {
		t.Errorf("host result %+v", results[0])
	}
	if f := results[1].Fields; f["exit_code"][0] != "2" || f["lxc_id"][0] != "7sfzjqlwhc0ptu5" || string(results[1].Stderr) != "E: boom" {
		t.Errorf("lxc result %+v", results[1])
	}
	if r, _ := s.Record("patch_operations", op.ID); r["status"] != "completed" || r["started_at"] == "" {
		t.Errorf("host op %v", r)
	}
	if r, _ := s.Record("patch_operations", lxcOp); r["status"] != "failed" {
		t.Errorf("lxc op %v", r)
	}
	// error_msg: kept by the backend, line breaks kept, control bytes not.
	msg := "refused by this host's policy.\npatches:\n  pinned:\n    - {id: x}\x1b[31m"
	if err := c.UpdatePatch(ctx, lxcOp, nannyapi.PatchUpdate{Status: "failed", ErrorMsg: msg}); err != nil {
		t.Fatal(err)
	}
	want := "refused by this host's policy.\npatches:\n  pinned:\n    - {id: x}?[31m"
	if r, _ := s.Record("patch_operations", lxcOp); r["error_msg"] != want || r["completed_at"] == "" {
		t.Errorf("error_msg %q completed_at %q", r["error_msg"], r["completed_at"])
	}
	posts := s.PatchStatusPosts()
	if last := posts[len(posts)-1]; last.Body["status"] != "failed" || last.Body["error_msg"] != want {
		t.Errorf("PATCH body %v", last.Body)
	}
	if err := c.UpdatePatch(ctx, lxcOp, nannyapi.PatchUpdate{Status: "failed", ErrorMsg: strings.Repeat("é", 3000)}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Record("patch_operations", lxcOp); len(r["error_msg"].(string)) > nannyapi.MaxErrorMsg+len("…") || !utf8.ValidString(r["error_msg"].(string)) {
		t.Errorf("long error_msg not clipped on a rune boundary: %d bytes", len(r["error_msg"].(string)))
	}
	otherC := newClient(t, s.URL(), nannyapi.Config{}).WithCredentials(&bearer{token: other.AccessToken})
	err = otherC.UploadPatchResult(ctx, op.ID, nannyapi.PatchResult{})
	if ae, ok := nannyapi.AsAPIError(err); !ok || ae.Status != 403 || ae.Message != "unauthorized: operation does not belong to agent" {
		t.Errorf("other agent's upload: %v", err)
	}

	// Reboot: list sent, read, acknowledge, completed at the monitor's tick
	// after the next metrics post; no /fail.
	rb, _ := s.CreateReboot(ag.ID, fakeapi.RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 120})
	reboots, err := c.ListRebootOperations(ctx, nannyapi.RecordQuery{Status: "sent"})
	if err != nil || len(reboots) != 1 || reboots[0].ID != rb || reboots[0].TimeoutSeconds != 120 || reboots[0].RequestedTime().IsZero() {
		t.Fatalf("reboots %+v %v", reboots, err)
	}
	if got, err := c.GetReboot(ctx, rb); err != nil || got.ID != rb || got.Status != "sent" || got.TimeoutSeconds != 120 ||
		got.AgentID != ag.ID || got.RequestedTime().IsZero() || got.AcknowledgedAt != "" {
		t.Fatalf("read %+v %v", got, err)
	}
	if err := c.AcknowledgeReboot(ctx, rb); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetReboot(ctx, rb); err != nil || got.Status != "rebooting" || nannyapi.ParseTime(got.AcknowledgedAt).IsZero() {
		t.Fatalf("read after ack %+v %v", got, err)
	}
	clock.Advance(time.Second)
	if err := c.IngestMetrics(ctx, sampleMetrics()); err != nil {
		t.Fatal(err)
	}
	s.RunRebootMonitor()
	if r, _ := s.Record("reboot_operations", rb); r["status"] != "completed" {
		t.Errorf("reboot %v", r)
	}
	if err := c.FailReboot(ctx, rb, "pct failed"); nannyapi.StatusOf(err) != 404 {
		t.Errorf("fail on older backend: %v", err)
	}

	// Proxmox: node before guests, blank required fields.
	if _, err := c.PostProxmoxLXC(ctx, nannyapi.ProxmoxLXC{Name: "ct", LXCID: "lxc/100", Status: "running", OSType: "ubuntu", VMID: 100, Node: "node3"}); !nannyapi.HasMessage(err, 400, "Node not found: node3") {
		t.Errorf("lxc before node: %v", err)
	}
	nodeID, err := c.PostProxmoxNode(ctx, nannyapi.ProxmoxNode{IP: "3.3.3.3", Local: 1, Name: "node3", NodeID: 1, Online: 1, PVEVersion: "pve-manager/8.2.4/faa83925c9641325"})
	if err != nil || nodeID == "" {
		t.Fatal(err)
	}
	if _, err := c.PostProxmoxLXC(ctx, nannyapi.ProxmoxLXC{Name: "ct", LXCID: "lxc/100", Status: "running", OSType: "ubuntu", Uptime: 81328, VMID: 100, Node: "node3"}); err != nil {
		t.Error(err)
	}
	cl := nannyapi.ProxmoxCluster{Name: "pxcluster", Nodes: 3, Quorate: 0, Version: 6, ClusterID: "cluster"}
	_, err = c.PostProxmoxCluster(ctx, cl)
	if ae, ok := nannyapi.AsAPIError(err); !ok || ae.Status != 400 || ae.Fields["quorate"].Code != "validation_required" {
		t.Errorf("quorate 0: %v", err)
	}
	if m := cl.MissingFields(); len(m) != 1 || m[0] != "quorate" {
		t.Errorf("MissingFields %v", m)
	}
	q := nannyapi.ProxmoxQEMU{Name: "vm-200", QemuID: "qemu/200", Status: "running", OSType: "l26", VMID: 200, KVM: 1, Node: "node3"}
	_, err = c.PostProxmoxQEMU(ctx, q)
	if ae, ok := nannyapi.AsAPIError(err); !ok || len(ae.Fields) != 2 || ae.Fields["boot"].Code == "" || ae.Fields["host_cpu"].Code == "" {
		t.Errorf("qemu without boot/cpu: %v", err)
	}
}

func TestStaticTokenHeaders(t *testing.T) {
	s := newFake(t, fakeapi.Options{RegisterWithToken: true})
	nsk := s.AddStaticToken("")
	c := newClient(t, s.URL(), nannyapi.Config{})
	ctx := ctxT(t)
	id, err := c.RegisterWithToken(ctx, nsk, "", sampleHost())
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.RegisterWithToken(ctx, nsk, id, sampleHost())
	if err != nil || again != id {
		t.Fatalf("re-register with X-Agent-ID: %q %v", again, err)
	}
	sc := c.WithCredentials(nannyapi.StaticToken{Token: nsk, AgentID: id}.Credentials())
	if err := sc.IngestMetrics(ctx, sampleMetrics()); err != nil {
		t.Fatal(err)
	}
	reqs := s.Requests()
	if reqs[0].Header.Get("X-Agent-ID") != "" || reqs[1].Header.Get("X-Agent-ID") != id || reqs[2].Header.Get("X-Agent-ID") != id ||
		reqs[2].Header.Get("Authorization") != "Bearer "+nsk {
		t.Errorf("headers: %v / %v / %v", reqs[0].Header, reqs[1].Header, reqs[2].Header)
	}
	old := newFake(t, fakeapi.Options{})
	_, err = newClient(t, old.URL(), nannyapi.Config{}).RegisterWithToken(ctx, nsk, "", sampleHost())
	if !nannyapi.IsUnknownAction(err) {
		t.Errorf("older backend: %v", err)
	}
	if strings.Contains(err.Error(), nsk) {
		t.Errorf("token in error: %v", err)
	}
	if _, err := c.RegisterWithToken(ctx, "not-nsk", "", sampleHost()); !errors.Is(err, nannyapi.ErrInvalidInput) {
		t.Errorf("malformed static token: %v", err)
	}
}

func TestUnauthorizedReplaysOnce(t *testing.T) {
	s := newFake(t, fakeapi.Options{})
	ag := s.AddAgent("", "a", "debian")
	fresh := s.AddAgent("", "a2", "debian") // a second valid token stands in for a refreshed one
	_ = fresh
	creds := &bearer{token: "expired-token", next: ag.AccessToken}
	c := newClient(t, s.URL(), nannyapi.Config{}).WithCredentials(creds)
	ctx := ctxT(t)
	if err := c.IngestMetrics(ctx, sampleMetrics()); err != nil {
		t.Fatal(err)
	}
	if len(creds.rejected) != 1 || creds.rejected[0] != "expired-token" || s.Hits(fakeapi.RouteIngestMetrics) != 2 {
		t.Errorf("rejected %v hits %d", creds.rejected, s.Hits(fakeapi.RouteIngestMetrics))
	}
	// A second 401 after the replay gives up, carrying the refresh error.
	s.ExpireAccessTokens(ag.ID)
	creds2 := &bearer{token: ag.AccessToken}
	err := newClient(t, s.URL(), nannyapi.Config{}).WithCredentials(creds2).IngestMetrics(ctx, sampleMetrics())
	ae, ok := nannyapi.AsAPIError(err)
	if !ok || ae.Status != 401 || ae.Err == nil || len(creds2.rejected) != 1 {
		t.Errorf("second 401: %v (rejected %d)", err, len(creds2.rejected))
	}
	if strings.Contains(err.Error(), ag.AccessToken) {
		t.Errorf("token in error: %v", err)
	}
	if s.Hits(fakeapi.RouteIngestMetrics) != 3 {
		t.Errorf("hits %d, want 3 (no retry loop)", s.Hits(fakeapi.RouteIngestMetrics))
	}
}

func TestRealtimeStream(t *testing.T) {
	s := newFake(t, fakeapi.Options{})
	ag := s.AddAgent("", "a", "debian")
	c := newClient(t, s.URL(), nannyapi.Config{}).WithCredentials(&bearer{token: ag.AccessToken})
	ctx := ctxT(t)
	body, err := c.OpenRealtime(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	r := bufio.NewReader(body)
	readFrame := func() (event, data string) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			switch {
			case strings.HasPrefix(line, "event:"):
				event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
			case strings.HasPrefix(line, "data:"):
				data = strings.TrimSpace(strings.TrimPrefix(line, "data:"))
			case line == "\n":
				return event, data
			}
		}
	}
	ev, data := readFrame()
	clientID, err := nannyapi.DecodeConnect([]byte(data))
	if err != nil || ev != "PB_CONNECT" {
		t.Fatalf("connect %q %q %v", ev, data, err)
	}
	if err := c.Subscribe(ctx, clientID, []string{nannyapi.CollectionInvestigations, nannyapi.CollectionPatchOperations, nannyapi.CollectionRebootOperations}); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, "unknown", nil); nannyapi.StatusOf(err) != http.StatusNotFound {
		t.Errorf("unknown client: %v", err)
	}
	rb, _ := s.CreateReboot(ag.ID, fakeapi.RebootSpec{Reason: "r", LXCID: "7sfzjqlwhc0ptu5", VMID: "100"})
	ev, data = readFrame()
	e, err := nannyapi.DecodeEvent(ev, []byte(data))
	if err != nil || e.Reboot == nil || e.Reboot.ID != rb || e.Reboot.VMID != "100" || e.Reboot.TimeoutSeconds != 300 || e.Action != "create" {
		t.Fatalf("event %+v %v", e, err)
	}
	s.DropStreams()
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Errorf("drop: %v", err)
	}
}
