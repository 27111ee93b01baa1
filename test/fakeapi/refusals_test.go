package fakeapi

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type rawReq struct {
	method, path, ctype, token, body string
	header                           map[string]string
}

// send makes one raw request and returns the status and body.
func send(t *testing.T, s *Server, r rawReq) (int, string) {
	t.Helper()
	req, err := http.NewRequest(r.method, s.URL()+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}

func agentPost(body, token string) rawReq {
	return rawReq{method: "POST", path: "/api/agent", ctype: "application/json", token: token, body: body}
}

const validMetrics = `{"action":"ingest-metrics","system_metrics":{"cpu_percent":45.2,"cpu_cores":8,"memory_used_gb":12.5,"memory_total_gb":16.0,"memory_percent":78.1,"disk_used_gb":250.0,"disk_total_gb":500.0,"disk_usage_percent":50.0,"load_average":{"one_min":2.15,"five_min":1.98,"fifteen_min":1.75},"network_stats":{"in_gb":125.5,"out_gb":89.3},"filesystems":[{"device":"/dev/sda1","mount_path":"/","used_gb":200.0,"free_gb":280.0,"total_gb":480.0,"usage_percent":41.7}]},"os_info":"Ubuntu 22.04.3 LTS","os_version":"22.04","version":"1.0.1","primary_ip":"192.168.1.100","kernel_version":"5.15.0-91-generic","platform_family":"debian","arch":"amd64","all_ips":["192.168.1.100","10.0.0.5"]}`

// TestRefusalsMatchBackend pins every refusal to the status and body that
// nannyapi-backend.md records, so the fake is never more permissive than
// the real server.
func TestRefusalsMatchBackend(t *testing.T) {
	clock := NewClock(time.Date(2026, 11, 25, 21, 40, 0, 0, time.UTC))
	s := New(Options{Now: clock.Now})
	defer s.Close()
	a := s.AddAgent("", "peer-test-01", "debian")
	b := s.AddAgent("", "peer-test-02", "debian")
	otherUser, otherToken := s.NewUser()
	stranger := s.AddAgent(otherUser, "stranger", "debian")
	user := s.UserToken()
	strangerInv, err := s.CreateInvestigation(stranger.ID, "Disk full on the stranger host", "high")
	if err != nil {
		t.Fatal(err)
	}
	aPatch, err := s.CreatePatch(a.ID, PatchSpec{Mode: "dry-run"})
	if err != nil {
		t.Fatal(err)
	}
	aReboot, err := s.CreateReboot(a.ID, RebootSpec{Reason: "Kernel update applied", TimeoutSeconds: 120})
	if err != nil {
		t.Fatal(err)
	}

	// A device code that is approved and consumed, for "already used".
	_, started := send(t, s, agentPost(`{"action":"device-auth-start"}`, ""))
	var da struct{ DeviceCode, UserCode string }
	da.DeviceCode = jsonField(t, started, "device_code")
	da.UserCode = jsonField(t, started, "user_code")
	if err := s.Approve(da.UserCode); err != nil {
		t.Fatal(err)
	}
	regBody := `{"action":"register","device_code":"` + da.DeviceCode + `","hostname":"h","version":"0.1.0","platform_family":"debian"}`
	if st, body := send(t, s, agentPost(regBody, "")); st != 200 {
		t.Fatalf("register: %d %s", st, body)
	}
	_, fresh := send(t, s, agentPost(`{"action":"device-auth-start"}`, ""))
	freshCode := jsonField(t, fresh, "device_code")
	freshUser := jsonField(t, fresh, "user_code")
	_, expiring := send(t, s, agentPost(`{"action":"device-auth-start"}`, ""))
	expiringCode := jsonField(t, expiring, "device_code")
	expiringUser := jsonField(t, expiring, "user_code")

	pb404 := `{"data":{},"message":"The requested resource wasn't found.","status":404}`
	cases := []struct {
		name   string
		req    rawReq
		status int
		body   string
	}{
		{"agent without content type", rawReq{method: "POST", path: "/api/agent", body: `{"action":"device-auth-start"}`}, 400, `{"error":"invalid request"}`},
		{"agent text/plain", rawReq{method: "POST", path: "/api/agent", ctype: "text/plain", body: `{"action":"device-auth-start"}`}, 400, `{"error":"invalid request"}`},
		{"agent curl form default", rawReq{method: "POST", path: "/api/agent", ctype: "application/x-www-form-urlencoded", body: `{"action":"device-auth-start"}`}, 400, `{"error":"unknown action"}`},
		{"underscore action", agentPost(`{"action":"device_auth_start"}`, ""), 400, `{"error":"unknown action"}`},
		{"empty body", agentPost(``, ""), 400, `{"error":"unknown action"}`},
		{"renew on older backend", agentPost(`{"action":"renew-refresh-token","refresh_token":"`+a.RefreshToken+`"}`, ""), 400, `{"error":"unknown action"}`},
		{"register-with-token on older backend", agentPost(`{"action":"register-with-token","hostname":"h","version":"1"}`, "nsk_x"), 400, `{"error":"unknown action"}`},
		{"docs path /api/auth", rawReq{method: "POST", path: "/api/auth", ctype: "application/json", body: `{}`}, 404, pb404},
		{"docs path /health", rawReq{method: "GET", path: "/health"}, 404, pb404},
		{"register before authorize", agentPost(`{"action":"register","device_code":"`+freshCode+`","hostname":"h","version":"1"}`, ""), 400, `{"error":"device not authorized yet"}`},
		{"register unknown code", agentPost(`{"action":"register","device_code":"00000000000000000000000000000000","hostname":"h","version":"1"}`, ""), 400, `{"error":"invalid device code"}`},
		{"register reused code", agentPost(regBody, ""), 400, `{"agent_id":"*","error":"device code already used"}`},
		{"authorize without token", agentPost(`{"action":"authorize","user_code":"`+freshUser+`"}`, ""), 500, `{"data":{},"message":"Something went wrong while processing your request.","status":500}`},
		{"authorize bad code", agentPost(`{"action":"authorize","user_code":"ZZZZZZZZ"}`, user), 400, `{"error":"invalid user code"}`},
		{"authorize with agent token", agentPost(`{"action":"authorize","user_code":"`+freshUser+`"}`, a.AccessToken), 500, `{"error":"failed to authorize"}`},
		{"refresh unknown token", agentPost(`{"action":"refresh","refresh_token":"6c4cc1db4825516cb3b36826c283a7a2"}`, ""), 401, `{"error":"invalid refresh token"}`},
		{"ingest without token", agentPost(validMetrics, ""), 401, `{"error":"authentication required"}`},
		{"ingest garbage token", agentPost(validMetrics, "garbage"), 401, `{"error":"authentication required"}`},
		{"ingest without platform_family", agentPost(strings.Replace(validMetrics, `"platform_family":"debian",`, "", 1), a.AccessToken), 400, `{"error":"platform_family required"}`},
		{"ingest cpu_percent over 100", agentPost(strings.Replace(validMetrics, `"cpu_percent":45.2`, `"cpu_percent":100.5`, 1), a.AccessToken), 500, `{"error":"failed to save metrics"}`},
		{"ingest negative number", agentPost(strings.Replace(validMetrics, `"memory_used_gb":12.5`, `"memory_used_gb":-1`, 1), a.AccessToken), 500, `{"error":"failed to save metrics"}`},
		{"ingest with user token", agentPost(validMetrics, user), 500, `{"error":"failed to save metrics"}`},
		{"subscribe unknown client", rawReq{method: "POST", path: "/api/realtime", ctype: "application/json", token: a.AccessToken, body: `{"clientId":"nope","subscriptions":["investigations"]}`}, 404, `{"data":{},"message":"Missing or invalid client id.","status":404}`},
		{"investigation create without token", rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", body: `{"agent_id":"` + a.ID + `","issue":"High CPU usage on mysqld","priority":"high"}`}, 401, `{"error":"authentication required"}`},
		{"investigation issue too short", rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", token: user, body: `{"agent_id":"` + a.ID + `","issue":"  short   ","priority":"high"}`}, 400, `{"error":"issue must be at least 10 characters long"}`},
		{"investigation unknown agent", rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", token: user, body: `{"agent_id":"zzzzzzzzzzzzzzz","issue":"High CPU usage on mysqld"}`}, 400, `{"error":"agent not found: sql: no rows in result set"}`},
		{"proxy unknown investigation", rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", token: a.AccessToken, body: `{"messages":[{"role":"user","content":"x"}],"investigation_id":"zzzzzzzzzzzzzzz"}`}, 404, `{"error":"investigation not found"}`},
		{"proxy other user's investigation", rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", token: a.AccessToken, body: `{"messages":[{"role":"user","content":"x"}],"investigation_id":"` + strangerInv + `"}`}, 403, `{"error":"unauthorized"}`},
		{"proxy content parts array", rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", token: stranger.AccessToken, body: `{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"investigation_id":"` + strangerInv + `"}`}, 400, `{"error":"invalid TensorZero request format"}`},
		{"proxy without AI", rawReq{method: "POST", path: "/api/investigations", ctype: "application/json", token: stranger.AccessToken, body: `{"messages":[{"role":"user","content":"x"}],"investigation_id":"` + strangerInv + `"}`}, 400, `{"error":"TensorZero error: fakeapi: no scripted AI answer configured"}`},
		{"patch bad mode", rawReq{method: "POST", path: "/api/patches", ctype: "application/json", token: user, body: `{"agent_id":"` + a.ID + `","mode":"yolo"}`}, 400, `{"error":"invalid mode: must be dry-run or apply"}`},
		{"validate without token", rawReq{method: "GET", path: "/api/scripts/nl52d78j6pgcswd/validate"}, 401, `{"error":"authentication required"}`},
		{"validate unknown script", rawReq{method: "GET", path: "/api/scripts/nl52d78j6pgcswd/validate", token: a.AccessToken}, 404, `{"error":"script not found"}`},
		{"patch result with user token", rawReq{method: "POST", path: "/api/patches/" + aPatch + "/result", ctype: "application/json", token: user, body: `{}`}, 403, `{"error":"only agents can upload results"}`},
		{"patch result from another agent", rawReq{method: "POST", path: "/api/patches/" + aPatch + "/result", ctype: "application/json", token: b.AccessToken, body: `{}`}, 403, `{"error":"unauthorized: operation does not belong to agent"}`},
		{"patch result unknown op", rawReq{method: "POST", path: "/api/patches/zzzzzzzzzzzzzzz/result", ctype: "application/json", token: a.AccessToken, body: `{}`}, 404, `{"error":"patch operation not found"}`},
		{"reboot by agent", rawReq{method: "POST", path: "/api/reboot", ctype: "application/json", token: a.AccessToken, body: `{"agent_id":"` + a.ID + `","reason":"x","timeout_seconds":120}`}, 403, `{"error":"agents cannot initiate reboots"}`},
		{"second pending reboot", rawReq{method: "POST", path: "/api/reboot", ctype: "application/json", token: user, body: `{"agent_id":"` + a.ID + `","reason":"x","timeout_seconds":120}`}, 409, `{"error":"agent already has a pending reboot"}`},
		{"acknowledge with user token", rawReq{method: "POST", path: "/api/reboot/" + aReboot + "/acknowledge", token: user}, 403, `{"error":"only agents can acknowledge reboots"}`},
		{"read another agent's reboot", rawReq{method: "GET", path: "/api/reboot/" + aReboot, token: b.AccessToken}, 403, `{"error":"unauthorized"}`},
		{"read another user's reboot", rawReq{method: "GET", path: "/api/reboot/" + aReboot, token: otherToken}, 403, `{"error":"unauthorized"}`},
		{"read an unknown reboot", rawReq{method: "GET", path: "/api/reboot/zzzzzzzzzzzzzzz", token: a.AccessToken}, 404, `{"error":"reboot operation not found"}`},
		{"read a reboot without a token", rawReq{method: "GET", path: "/api/reboot/" + aReboot}, 401, `{"error":"authentication required"}`},
		{"no reboot fail route", rawReq{method: "POST", path: "/api/reboot/" + aReboot + "/fail", ctype: "application/json", token: a.AccessToken, body: `{"error":"x"}`}, 404, pb404},
		{"proxmox with user token", rawReq{method: "POST", path: "/api/proxmox/node", ctype: "application/json", token: user, body: `{"ip":"3.3.3.3","name":"node3","pveversion":"pve-manager/8.2.4"}`}, 401, `{"error":"unauthorized"}`},
		{"proxmox quorate 0", rawReq{method: "POST", path: "/api/proxmox/cluster", ctype: "application/json", token: a.AccessToken, body: `{"name":"pxcluster","nodes":3,"quorate":0,"version":6,"px_cluster_id":"cluster"}`}, 400, `{"data":{"quorate":{"code":"validation_required","message":"Cannot be blank."}},"message":"Something went wrong while processing your request.","status":400}`},
		{"proxmox lxc before node", rawReq{method: "POST", path: "/api/proxmox/lxc", ctype: "application/json", token: a.AccessToken, body: `{"name":"testcontainer","lxc_id":"lxc/100","status":"running","ostype":"ubuntu","uptime":81328,"vmid":100,"node":"nodeX"}`}, 400, `{"error":"Node not found: nodeX"}`},
		{"proxmox bad body", rawReq{method: "POST", path: "/api/proxmox/cluster", ctype: "application/json", token: a.AccessToken, body: `{"nodes":"three"}`}, 400, `{"error":"Invalid request body"}`},
		{"health", rawReq{method: "GET", path: "/api/health"}, 200, `{"message":"API is healthy.","code":200,"data":{}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := send(t, s, tc.req)
			if status != tc.status || !sameBody(body, tc.body) {
				t.Errorf("got %d %s\nwant %d %s", status, body, tc.status, tc.body)
			}
		})
	}

	// Order-dependent refusals.
	t.Run("qemu without boot and cpu", func(t *testing.T) {
		if st, body := send(t, s, rawReq{method: "POST", path: "/api/proxmox/node", ctype: "application/json", token: a.AccessToken,
			body: `{"ip":"3.3.3.3","level":"","local":1,"name":"node3","nodeid":1,"online":1,"pveversion":"pve-manager/8.2.4/faa83925c9641325"}`}); st != 200 {
			t.Fatalf("node: %d %s", st, body)
		}
		st, body := send(t, s, rawReq{method: "POST", path: "/api/proxmox/qemu", ctype: "application/json", token: a.AccessToken,
			body: `{"name":"vm-200","qemu_id":"qemu/200","status":"running","ostype":"l26","uptime":5000,"vmid":200,"kvm":1,"node":"node3"}`})
		want := `{"data":{"boot":{"code":"validation_required","message":"Cannot be blank."},"host_cpu":{"code":"validation_required","message":"Cannot be blank."}},"message":"Something went wrong while processing your request.","status":400}`
		if st != 400 || body != want {
			t.Errorf("got %d %s", st, body)
		}
	})
	t.Run("refresh expired", func(t *testing.T) {
		s.ExpireRefreshToken(b.ID)
		st, body := send(t, s, agentPost(`{"action":"refresh","refresh_token":"`+b.RefreshToken+`"}`, ""))
		if st != 401 || body != `{"error":"refresh token expired"}` {
			t.Errorf("got %d %s", st, body)
		}
	})
	t.Run("device code expired", func(t *testing.T) {
		if err := s.Approve(expiringUser); err != nil {
			t.Fatal(err)
		}
		clock.Advance(11 * time.Minute)
		st, body := send(t, s, agentPost(`{"action":"register","device_code":"`+expiringCode+`","hostname":"h","version":"1"}`, ""))
		if st != 400 || body != `{"error":"device code expired"}` {
			t.Errorf("got %d %s", st, body)
		}
	})
	t.Run("register without hostname keeps the code", func(t *testing.T) {
		_, started := send(t, s, agentPost(`{"action":"device-auth-start"}`, ""))
		code := jsonField(t, started, "device_code")
		if err := s.Approve(jsonField(t, started, "user_code")); err != nil {
			t.Fatal(err)
		}
		st, body := send(t, s, agentPost(`{"action":"register","device_code":"`+code+`","version":"1"}`, ""))
		if st != 500 || body != `{"error":"failed to create agent: hostname: cannot be blank."}` {
			t.Fatalf("got %d %s", st, body)
		}
		if st, body := send(t, s, agentPost(`{"action":"register","device_code":"`+code+`","hostname":"h","version":"1"}`, "")); st != 200 {
			t.Errorf("retry after the 500: %d %s", st, body)
		}
	})
	t.Run("revoked agent's access token keeps working", func(t *testing.T) {
		if st, body := send(t, s, agentPost(`{"action":"revoke","agent_id":"`+a.ID+`"}`, user)); st != 200 || body != `{"success":true,"message":"agent revoked"}` {
			t.Fatalf("revoke: %d %s", st, body)
		}
		if st, _ := send(t, s, agentPost(validMetrics, a.AccessToken)); st != 200 {
			t.Errorf("ingest after revoke: %d, want 200 (revoke only clears the refresh token)", st)
		}
		if st, body := send(t, s, agentPost(`{"action":"refresh","refresh_token":"`+a.RefreshToken+`"}`, "")); st != 401 || body != `{"error":"invalid refresh token"}` {
			t.Errorf("refresh after revoke: %d %s", st, body)
		}
	})
}

// sameBody compares JSON bodies exactly, except that "*" in want matches
// any string value.
func sameBody(got, want string) bool {
	if !strings.Contains(want, `"*"`) {
		return got == want
	}
	var g, w map[string]any
	if json.Unmarshal([]byte(got), &g) != nil || json.Unmarshal([]byte(want), &w) != nil || len(g) != len(w) {
		return false
	}
	for k, v := range w {
		if v == "*" {
			if s, ok := g[k].(string); !ok || s == "" {
				return false
			}
			continue
		}
		if g[k] != v {
			return false
		}
	}
	return true
}

func jsonField(t *testing.T, body, key string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	s, _ := m[key].(string)
	return s
}
