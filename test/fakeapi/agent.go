package fakeapi

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
)

// handleAgent is POST /api/agent, switched on "action". It needs
// Content-Type: application/json: text/plain or none gives 400 "invalid
// request", any other type (curl's form default) 400 "unknown action".
func (s *Server) handleAgent(w http.ResponseWriter, r *http.Request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch strings.ToLower(mt) {
	case "application/json":
	case "", "text/plain":
		writeErr(w, http.StatusBadRequest, "invalid request")
		return
	default:
		writeErr(w, http.StatusBadRequest, "unknown action")
		return
	}
	body, _ := io.ReadAll(r.Body)
	fields := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &fields); err != nil {
			writeErr(w, http.StatusBadRequest, "invalid request")
			return
		}
	}
	var action string
	if raw, ok := fields["action"]; ok && json.Unmarshal(raw, &action) != nil {
		writeErr(w, http.StatusBadRequest, "invalid request")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	switch action {
	case "device-auth-start":
		s.deviceAuthStart(w)
	case "authorize":
		s.authorize(w, r, body)
	case "register":
		s.register(w, body)
	case "refresh":
		s.refresh(w, body, false)
	case "renew-refresh-token":
		if !s.opts.RenewRefreshToken {
			writeErr(w, http.StatusBadRequest, "unknown action")
			return
		}
		s.refresh(w, body, true)
	case "register-with-token":
		if !s.opts.RegisterWithToken {
			writeErr(w, http.StatusBadRequest, "unknown action")
			return
		}
		s.registerWithToken(w, r, body)
	case "ingest-metrics":
		s.ingestMetrics(w, r, body)
	case "revoke":
		s.revoke(w, r, body)
	case "list":
		s.listAgents(w, r)
	default:
		writeErr(w, http.StatusBadRequest, "unknown action")
	}
}

func (s *Server) deviceAuthStart(w http.ResponseWriter) {
	s.mu.Lock()
	dc := &deviceCode{deviceCode: hex32(), userCode: userCode(), expires: s.now().Add(s.opts.DeviceCodeTTL)}
	if s.opts.AutoApprove {
		dc.authorized, dc.userID = true, s.st.defaultUser
	}
	s.st.deviceCodes[dc.deviceCode] = dc
	s.notify()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, struct {
		DeviceCode      string `json:"device_code"`
		UserCode        string `json:"user_code"`
		VerificationURI string `json:"verification_uri"`
		ExpiresIn       int    `json:"expires_in"`
	}{dc.deviceCode, dc.userCode, strings.TrimSuffix(s.opts.FrontendURL, "/") + "/agent/authorize?user_code=" + dc.userCode, 600})
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		UserCode string `json:"user_code"`
	}
	if json.Unmarshal(body, &req) != nil {
		writeErr(w, http.StatusBadRequest, "invalid request")
		return
	}
	if req.UserCode == "" {
		writeErr(w, http.StatusBadRequest, "user_code required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.authLocked(r)
	if p.kind == kindNone {
		// The real handler panics on the missing auth record: a 500, not a 401.
		pbGeneric500(w)
		return
	}
	status, msg := s.approveLocked(req.UserCode, p)
	if status != http.StatusOK {
		writeErr(w, status, msg)
		return
	}
	writeJSON(w, http.StatusOK, success{true, "device authorized"})
}

func (s *Server) approveLocked(code string, p principal) (int, string) {
	var dc *deviceCode
	for _, d := range s.st.deviceCodes {
		if d.userCode == code {
			dc = d
		}
	}
	switch {
	case dc == nil:
		return http.StatusBadRequest, "invalid user code"
	case !s.now().Before(dc.expires):
		return http.StatusBadRequest, "code expired"
	case p.kind != kindUser:
		return http.StatusInternalServerError, "failed to authorize"
	}
	dc.authorized, dc.userID = true, p.id
	s.notify()
	return http.StatusOK, ""
}

// hostFields are the registration fields an agent record keeps.
var hostFields = []string{"hostname", "os_type", "os_info", "os_version", "platform_family", "version",
	"kernel_version", "arch", "primary_ip", "all_ips"}

func hostOf(fields map[string]any) map[string]any {
	h := map[string]any{}
	for _, k := range hostFields {
		if v, ok := fields[k]; ok {
			h[k] = v
		}
	}
	return h
}

// createAgentLocked validates the host like the real handler (hostname and
// version required: 500 "failed to create agent: …") and creates the agent.
func (s *Server) createAgentLocked(userID string, fields map[string]any) (*agent, string) {
	for _, k := range []string{"hostname", "version"} {
		if v, _ := fields[k].(string); v == "" {
			return nil, "failed to create agent: " + k + ": cannot be blank."
		}
	}
	a := &agent{id: pbID(), userID: userID, host: hostOf(fields), created: s.now(), lastSeen: s.now()}
	s.st.agents[a.id] = a
	s.st.registrations = append(s.st.registrations, Registration{AgentID: a.id, Body: fields})
	return a, ""
}

func (s *Server) newRefreshLocked(a *agent) string {
	a.refreshToken = hex32()
	a.refreshExpires = s.now().Add(s.opts.RefreshTokenTTL)
	return a.refreshToken
}

type tokenAnswer struct {
	AccessToken           string `json:"access_token"`
	RefreshToken          string `json:"refresh_token"`
	TokenType             string `json:"token_type,omitempty"`
	ExpiresIn             int    `json:"expires_in"`
	RefreshTokenExpiresIn int    `json:"refresh_token_expires_in,omitempty"`
	AgentID               string `json:"agent_id"`
}

// hostTypesOK checks the field types like the real handler's bind into a
// struct (a wrong type is 400 "invalid request").
func hostTypesOK(body []byte) bool {
	var typed struct {
		DeviceCode     string   `json:"device_code"`
		Hostname       string   `json:"hostname"`
		OSType         string   `json:"os_type"`
		OSInfo         string   `json:"os_info"`
		OSVersion      string   `json:"os_version"`
		PlatformFamily string   `json:"platform_family"`
		Version        string   `json:"version"`
		KernelVersion  string   `json:"kernel_version"`
		Arch           string   `json:"arch"`
		PrimaryIP      string   `json:"primary_ip"`
		AllIPs         []string `json:"all_ips"`
	}
	return json.Unmarshal(body, &typed) == nil
}

func (s *Server) register(w http.ResponseWriter, body []byte) {
	fields := map[string]any{}
	if json.Unmarshal(body, &fields) != nil || !hostTypesOK(body) {
		writeErr(w, http.StatusBadRequest, "invalid request")
		return
	}
	code, _ := fields["device_code"].(string)
	if code == "" {
		writeErr(w, http.StatusBadRequest, "device_code required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dc, ok := s.st.deviceCodes[code]
	switch {
	case !ok:
		writeErr(w, http.StatusBadRequest, "invalid device code")
		return
	case !s.now().Before(dc.expires):
		writeErr(w, http.StatusBadRequest, "device code expired")
		return
	case !dc.authorized:
		writeErr(w, http.StatusBadRequest, "device not authorized yet")
		return
	case dc.consumed:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "device code already used", "agent_id": dc.agentID})
		return
	}
	a, msg := s.createAgentLocked(dc.userID, fields)
	if a == nil {
		writeErr(w, http.StatusInternalServerError, msg)
		return
	}
	dc.consumed, dc.agentID = true, a.id
	refresh := s.newRefreshLocked(a)
	access := s.issueTokenLocked(kindAgent, a.id)
	s.notify()
	writeJSON(w, http.StatusOK, tokenAnswer{AccessToken: access, RefreshToken: refresh, ExpiresIn: 3600, AgentID: a.id})
}

// refresh serves refresh (no rotation: "refresh_token":"") and, when
// renew, renew-refresh-token (a new refresh token; the old one dies).
func (s *Server) refresh(w http.ResponseWriter, body []byte, renew bool) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if json.Unmarshal(body, &req) != nil {
		writeErr(w, http.StatusBadRequest, "invalid request")
		return
	}
	if req.RefreshToken == "" {
		writeErr(w, http.StatusBadRequest, "refresh_token required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var a *agent
	for _, cand := range s.st.agents {
		if cand.refreshToken != "" && cand.refreshToken == req.RefreshToken {
			a = cand
		}
	}
	if a == nil {
		writeErr(w, http.StatusUnauthorized, "invalid refresh token")
		return
	}
	if !s.now().Before(a.refreshExpires) {
		writeErr(w, http.StatusUnauthorized, "refresh token expired")
		return
	}
	ans := tokenAnswer{AccessToken: s.issueTokenLocked(kindAgent, a.id), ExpiresIn: 3600, AgentID: a.id}
	if renew {
		ans.RefreshToken = s.newRefreshLocked(a)
		ans.TokenType = "Bearer"
		ans.RefreshTokenExpiresIn = int(s.opts.RefreshTokenTTL.Seconds())
	}
	s.notify()
	writeJSON(w, http.StatusOK, ans)
}

// registerWithToken is the newer backend's static-token registration:
// Bearer nsk_… identifies the user; X-Agent-ID re-registers a known agent.
func (s *Server) registerWithToken(w http.ResponseWriter, r *http.Request, body []byte) {
	fields := map[string]any{}
	if json.Unmarshal(body, &fields) != nil || !hostTypesOK(body) {
		writeErr(w, http.StatusBadRequest, "invalid request")
		return
	}
	raw := strings.TrimSpace(r.Header.Get("Authorization"))
	if len(raw) > 7 && strings.EqualFold(raw[:7], "bearer ") {
		raw = strings.TrimSpace(raw[7:])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	uid, ok := s.st.staticTokens[raw]
	if !ok {
		writeErr(w, http.StatusUnauthorized, "invalid static token")
		return
	}
	if a, ok := s.st.agents[r.Header.Get("X-Agent-ID")]; ok && a.userID == uid {
		a.host = hostOf(fields)
		s.st.registrations = append(s.st.registrations, Registration{AgentID: a.id, Body: fields, Static: true})
		s.notify()
		writeJSON(w, http.StatusOK, map[string]string{"agent_id": a.id})
		return
	}
	a, msg := s.createAgentLocked(uid, fields)
	if a == nil {
		writeErr(w, http.StatusInternalServerError, msg)
		return
	}
	s.st.registrations[len(s.st.registrations)-1].Static = true
	s.notify()
	writeJSON(w, http.StatusOK, map[string]string{"agent_id": a.id})
}

type metricsBody struct {
	SystemMetrics struct {
		CPUPercent       float64 `json:"cpu_percent"`
		CPUCores         float64 `json:"cpu_cores"`
		MemoryUsedGB     float64 `json:"memory_used_gb"`
		MemoryTotalGB    float64 `json:"memory_total_gb"`
		MemoryPercent    float64 `json:"memory_percent"`
		DiskUsedGB       float64 `json:"disk_used_gb"`
		DiskTotalGB      float64 `json:"disk_total_gb"`
		DiskUsagePercent float64 `json:"disk_usage_percent"`
		LoadAverage      struct {
			OneMin     float64 `json:"one_min"`
			FiveMin    float64 `json:"five_min"`
			FifteenMin float64 `json:"fifteen_min"`
		} `json:"load_average"`
		NetworkStats struct {
			InGB  float64 `json:"in_gb"`
			OutGB float64 `json:"out_gb"`
		} `json:"network_stats"`
		Filesystems []json.RawMessage `json:"filesystems"`
	} `json:"system_metrics"`
	PlatformFamily string   `json:"platform_family"`
	OSInfo         string   `json:"os_info"`
	OSVersion      string   `json:"os_version"`
	Version        string   `json:"version"`
	PrimaryIP      string   `json:"primary_ip"`
	KernelVersion  string   `json:"kernel_version"`
	Arch           string   `json:"arch"`
	AllIPs         []string `json:"all_ips"`
}

// ingestMetrics validates like the real backend: 401 without a valid agent
// token, 400 without platform_family, 500 for a user token, cpu_percent
// above 100 or a negative number.
func (s *Server) ingestMetrics(w http.ResponseWriter, r *http.Request, body []byte) {
	var m metricsBody
	if json.Unmarshal(body, &m) != nil {
		writeErr(w, http.StatusBadRequest, "invalid request")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.authLocked(r)
	if p.kind == kindNone {
		writeErr(w, http.StatusUnauthorized, "authentication required")
		return
	}
	if m.PlatformFamily == "" {
		writeErr(w, http.StatusBadRequest, "platform_family required")
		return
	}
	sm := m.SystemMetrics
	values := []float64{sm.CPUCores, sm.MemoryUsedGB, sm.MemoryTotalGB, sm.MemoryPercent, sm.DiskUsedGB,
		sm.DiskTotalGB, sm.DiskUsagePercent, sm.LoadAverage.OneMin, sm.LoadAverage.FiveMin,
		sm.LoadAverage.FifteenMin, sm.NetworkStats.InGB, sm.NetworkStats.OutGB, sm.CPUPercent}
	bad := p.kind != kindAgent || sm.CPUPercent > 100
	for _, v := range values {
		bad = bad || v < 0
	}
	if bad {
		writeErr(w, http.StatusInternalServerError, "failed to save metrics")
		return
	}
	a := s.st.agents[p.id]
	a.lastSeen = s.now()
	var raw map[string]any
	_ = json.Unmarshal(body, &raw)
	s.st.metrics = append(s.st.metrics, MetricsPost{AgentID: a.id, Body: raw, At: s.now()})
	s.notify()
	writeJSON(w, http.StatusOK, success{true, "metrics recorded"})
}

// revoke is the portal's revoke: it only clears the refresh token; the
// agent's access token keeps working until its JWT expires.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		AgentID string `json:"agent_id"`
	}
	_ = json.Unmarshal(body, &req)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.authLocked(r)
	if p.kind != kindUser {
		pbGeneric500(w)
		return
	}
	if req.AgentID == "" {
		writeErr(w, http.StatusBadRequest, "agent_id required")
		return
	}
	a, ok := s.st.agents[req.AgentID]
	if !ok {
		writeErr(w, http.StatusNotFound, "agent not found")
		return
	}
	if a.userID != p.id {
		writeErr(w, http.StatusForbidden, "not your agent")
		return
	}
	a.refreshToken = ""
	s.notify()
	writeJSON(w, http.StatusOK, success{true, "agent revoked"})
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.authLocked(r)
	if p.kind != kindUser {
		pbGeneric500(w)
		return
	}
	out := []map[string]any{}
	for _, a := range s.st.agents {
		if a.userID != p.id {
			continue
		}
		item := map[string]any{"id": a.id, "status": "", "health": "healthy",
			"last_seen": a.lastSeen.UTC().Format("2006-01-02T15:04:05.000Z"), "created": "0001-01-01T00:00:00Z"}
		for _, k := range []string{"hostname", "os_type", "os_info", "os_version", "version", "kernel_version", "arch"} {
			item[k] = a.host[k]
		}
		out = append(out, item)
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": out})
}
