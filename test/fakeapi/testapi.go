package fakeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Request is one request the server received.
type Request struct {
	Method string
	Path   string
	Query  string
	Route  string
	Header http.Header
	Body   []byte
	At     time.Time
}

// MetricsPost is one accepted ingest-metrics body.
type MetricsPost struct {
	AgentID string
	Body    map[string]any
	At      time.Time
}

// ProxmoxPost is one accepted Proxmox ingestion.
type ProxmoxPost struct {
	// Kind is "cluster", "node", "lxc" or "qemu".
	Kind    string
	AgentID string
	ID      string
	Body    map[string]any
}

// PatchResultPost is one patch result upload.
type PatchResultPost struct {
	OperationID string
	AgentID     string
	ContentType string
	// Fields are the form's text fields (exit_code, lxc_id, …).
	Fields     map[string][]string
	Stdout     []byte
	StdoutName string
	Stderr     []byte
	StderrName string
}

// InvestigationPatch is one PATCH /api/investigations body, all keys as sent.
type InvestigationPatch struct {
	ID      string
	AgentID string
	Body    map[string]any
}

// PatchStatusPost is one PATCH /api/patches body.
type PatchStatusPost struct {
	OperationID string
	Body        map[string]any
}

// AITurnRecord is one proxy turn and what the AI answered.
type AITurnRecord struct {
	AITurn
	Answer string
	Err    string
	Body   []byte
}

// RebootFailPost is one POST /api/reboot/<id>/fail body.
type RebootFailPost struct {
	RebootID string
	Body     string
}

// Registration is one agent registration body (device flow or static).
type Registration struct {
	AgentID string
	Body    map[string]any
	Static  bool
}

// AgentCredentials are an agent's tokens, for tests that skip registration.
type AgentCredentials struct {
	ID           string
	AccessToken  string
	RefreshToken string
}

// ClientInfo describes a realtime client.
type ClientInfo struct {
	ID            string
	AuthID        string
	Subscriptions []string
	// Queued frames wait to be written; Delivered were written; Lost were
	// dropped because the queue was full.
	Queued    int
	Delivered int
	Lost      int
}

// UserID returns the default user's id.
func (s *Server) UserID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.defaultUser
}

// UserToken returns the default user's token (for curl in the demo).
func (s *Server) UserToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.users[s.st.defaultUser].token
}

// NewUser creates another portal user and returns its id and token.
func (s *Server) NewUser() (id, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.newUserLocked()
	return u.id, u.token
}

// Approve authorizes a user code as the default user, as the portal does.
func (s *Server) Approve(userCode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status, msg := s.approveLocked(userCode, principal{kind: kindUser, id: s.st.defaultUser, userID: s.st.defaultUser}); status != http.StatusOK {
		return fmt.Errorf("approve %s: %d %s", userCode, status, msg)
	}
	return nil
}

// WaitDeviceCode waits for a device code to be started and returns its user code.
func (s *Server) WaitDeviceCode(ctx context.Context) (string, error) {
	var code string
	err := s.waitFor(ctx, func() bool {
		for _, dc := range s.st.deviceCodes {
			if !dc.consumed {
				code = dc.userCode
				return true
			}
		}
		return false
	})
	return code, err
}

// AddAgent creates an agent for userID ("" = the default user) without the
// device flow and returns its tokens.
func (s *Server) AddAgent(userID, hostname, platformFamily string) AgentCredentials {
	s.mu.Lock()
	defer s.mu.Unlock()
	if userID == "" {
		userID = s.st.defaultUser
	}
	a, _ := s.createAgentLocked(userID, map[string]any{"hostname": hostname, "version": "test",
		"platform_family": platformFamily, "os_type": "linux"})
	refresh := s.newRefreshLocked(a)
	access := s.issueTokenLocked(kindAgent, a.id)
	s.notify()
	return AgentCredentials{ID: a.id, AccessToken: access, RefreshToken: refresh}
}

// AddStaticToken creates an nsk_ token for userID ("" = the default user).
func (s *Server) AddStaticToken(userID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if userID == "" {
		userID = s.st.defaultUser
	}
	tok := "nsk_" + hex32() + hex32()
	s.st.staticTokens[tok] = userID
	return tok
}

// Agent returns an agent's stored host metadata and whether it exists.
func (s *Server) Agent(id string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.st.agents[id]
	if !ok {
		return nil, false
	}
	return clone(a.host), true
}

// CreateInvestigation creates an investigation as the agent's user (as the
// portal does) and returns its id.
func (s *Server) CreateInvestigation(agentID, prompt, priority string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.st.agents[agentID]
	if !ok {
		return "", fmt.Errorf("fakeapi: agent %s not found", agentID)
	}
	return s.newInvestigationLocked(a, prompt, priority, "user")["id"].(string), nil
}

// CreatePatch creates a patch operation as the agent's user and returns its id.
func (s *Server) CreatePatch(agentID string, spec PatchSpec) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, _, status, msg := s.createPatchLocked(agentID, spec)
	if rec == nil {
		return "", fmt.Errorf("fakeapi: create patch: %d %s", status, msg)
	}
	return rec["id"].(string), nil
}

// AddScript adds a patch script and returns its record id and sha256.
func (s *Server) AddScript(platformFamily, name string, content []byte) (id, sha256 string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.addScriptLocked(platformFamily, name, content)
	return sc.id, sc.sha256
}

// TamperScript makes downloads of a script return served instead of its
// content, while validate still gives the original sha256 (a corrupted or
// swapped file).
func (s *Server) TamperScript(id string, served []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, ok := s.st.scripts[id]
	if ok {
		sc.served = append([]byte{}, served...)
	}
	return ok
}

// Script returns a script's URL path and content.
func (s *Server) Script(id string) (urlPath string, content []byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, ok := s.st.scripts[id]
	if !ok {
		return "", nil, false
	}
	return "/api/files/" + collScriptsID + "/" + sc.id + "/" + sc.file, append([]byte(nil), sc.content...), true
}

// CreateReboot requests a reboot as the agent's user and returns its id.
func (s *Server) CreateReboot(agentID string, spec RebootSpec) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, status, msg := s.createRebootLocked(agentID, spec)
	if rec == nil {
		return "", fmt.Errorf("fakeapi: create reboot: %d %s", status, msg)
	}
	return rec["id"].(string), nil
}

// TimeoutReboot does what the backend's monitor does when a reboot was not
// acknowledged in time.
func (s *Server) TimeoutReboot(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.st.records["reboot_operations"].byID[id]
	if !ok {
		return fmt.Errorf("fakeapi: reboot %s not found", id)
	}
	msg := "Agent did not acknowledge reboot command"
	if rec["status"] == "rebooting" {
		msg = "Agent did not reconnect within timeout period"
	}
	s.finishRebootLocked(rec, "timeout", msg)
	return nil
}

// RebootHistory is every status a reboot took, in order ("sent" first).
func (s *Server) RebootHistory(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.st.rebootHistory[id]...)
}

// EmitToAgent sends a record's current state as a frame to agentID's
// realtime clients even when the record is another agent's: a hostile or
// broken backend, which the real one's list rule would not let happen.
func (s *Server) EmitToAgent(agentID, collection, id, action string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.records[collection]
	if !ok || c.byID[id] == nil {
		return fmt.Errorf("fakeapi: %s record %s not found", collection, id)
	}
	data, err := json.Marshal(struct {
		Record map[string]any `json:"record"`
		Action string         `json:"action"`
	}{c.byID[id], action})
	if err != nil {
		return err
	}
	for _, cl := range s.st.clients {
		if cl.authID != agentID || !cl.subs[collection] {
			continue
		}
		select {
		case cl.frames <- frame(cl.id, collection, data):
		default:
			cl.lost++
		}
	}
	s.notify()
	return nil
}

// Record returns a copy of a record of investigations, patch_operations or
// reboot_operations.
func (s *Server) Record(collection, id string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.records[collection]
	if !ok {
		return nil, false
	}
	rec, ok := c.byID[id]
	return clone(rec), ok
}

// WaitRecord waits until a record satisfies cond.
func (s *Server) WaitRecord(ctx context.Context, collection, id string, cond func(map[string]any) bool) error {
	return s.waitFor(ctx, func() bool {
		c, ok := s.st.records[collection]
		if !ok {
			return false
		}
		rec, ok := c.byID[id]
		return ok && cond(rec)
	})
}

// File returns a stored patch output file.
func (s *Server) File(operationID, name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.st.files["patch_operations/"+operationID+"/"+name]
	return data, ok
}

// Requests returns every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.st.requests...)
}

// Hits returns how many requests reached a route (faulted ones included).
func (s *Server) Hits(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.hits[route]
}

// WaitHits waits until route has been hit at least n times.
func (s *Server) WaitHits(ctx context.Context, route string, n int) error {
	return s.waitFor(ctx, func() bool { return s.st.hits[route] >= n })
}

// Metrics returns the accepted metrics posts.
func (s *Server) Metrics() []MetricsPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]MetricsPost(nil), s.st.metrics...)
}

// ProxmoxPosts returns the accepted Proxmox posts.
func (s *Server) ProxmoxPosts() []ProxmoxPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ProxmoxPost(nil), s.st.proxmox...)
}

// PatchResults returns the patch result uploads.
func (s *Server) PatchResults() []PatchResultPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]PatchResultPost(nil), s.st.patchResults...)
}

// PatchStatusPosts returns the PATCH /api/patches bodies.
func (s *Server) PatchStatusPosts() []PatchStatusPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]PatchStatusPost(nil), s.st.patchPatches...)
}

// InvestigationPatches returns the PATCH /api/investigations bodies.
func (s *Server) InvestigationPatches() []InvestigationPatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]InvestigationPatch(nil), s.st.invPatches...)
}

// AITurns returns the proxy turns, with the messages the agent sent.
func (s *Server) AITurns() []AITurnRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AITurnRecord(nil), s.st.aiTurns...)
}

// RebootFails returns the /fail bodies (only with Options.RebootFail).
func (s *Server) RebootFails() []RebootFailPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RebootFailPost(nil), s.st.rebootFails...)
}

// Registrations returns the registration bodies.
func (s *Server) Registrations() []Registration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Registration(nil), s.st.registrations...)
}

// Clients lists the connected realtime clients.
func (s *Server) Clients() []ClientInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ClientInfo, 0, len(s.st.clients))
	for _, c := range s.st.clients {
		out = append(out, c.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (c *rtClient) info() ClientInfo {
	subs := make([]string, 0, len(c.subs))
	for sub := range c.subs {
		subs = append(subs, sub)
	}
	sort.Strings(subs)
	return ClientInfo{ID: c.id, AuthID: c.authID, Subscriptions: subs, Queued: len(c.frames), Delivered: c.delivered, Lost: c.lost}
}

// WaitSubscribed waits until a realtime client authenticated as agentID is
// subscribed to collection and returns its clientId.
func (s *Server) WaitSubscribed(ctx context.Context, agentID, collection string) (string, error) {
	var id string
	err := s.waitFor(ctx, func() bool {
		for _, c := range s.st.clients {
			if c.authID == agentID && c.subs[collection] {
				id = c.id
				return true
			}
		}
		return false
	})
	return id, err
}

// --- fault injection ---

// Fail makes the next times requests to route answer status with body
// ({"error":"fakeapi: injected fault"} when empty) before any processing;
// times <= 0 means until ClearFaults.
func (s *Server) Fail(route string, status, times int, body string) {
	ctype := "application/json"
	if body == "" {
		body = `{"error":"fakeapi: injected fault"}`
	} else if !json.Valid([]byte(body)) {
		ctype = "text/html; charset=utf-8"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.faults[route] = &fault{status: status, body: body, contentType: ctype, remaining: times}
}

// ClearFaults removes every injected fault and delay.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.faults = map[string]*fault{}
	s.st.slow = map[string]time.Duration{}
}

// Slow delays every request to route by d before answering (0 clears).
func (s *Server) Slow(route string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.st.slow, route)
		return
	}
	s.st.slow[route] = d
}

// DropStreams closes every realtime stream now (clients must reconnect and
// subscribe again).
func (s *Server) DropStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.st.clients {
		if !c.dropped {
			c.dropped = true
			close(c.drop)
		}
	}
}

// StopDelivery keeps a client's stream open but delivers it nothing more,
// like a backend that silently lost the subscription.
func (s *Server) StopDelivery(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.st.clients[clientID]; ok {
		c.muted = true
	}
}

// ExpireAccessTokens makes every access token issued to agentID invalid
// (the next agent call gets 401; a refresh issues a working one).
func (s *Server) ExpireAccessTokens(agentID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.st.tokens {
		if t.kind == kindAgent && t.id == agentID {
			t.revoked = true
		}
	}
}

// RevokeAgent does what the portal's revoke does: it clears the refresh
// token (refresh then answers 401 "invalid refresh token"); the access token
// keeps working.
func (s *Server) RevokeAgent(agentID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.st.agents[agentID]; ok {
		a.refreshToken = ""
	}
}

// ExpireRefreshToken ends the agent's refresh token's life now (refresh
// then answers 401 "refresh token expired").
func (s *Server) ExpireRefreshToken(agentID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.st.agents[agentID]; ok {
		a.refreshExpires = s.now()
	}
}

// SetAI replaces the AI.
func (s *Server) SetAI(ai AI) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.AI = ai
}

func clone(m map[string]any) map[string]any {
	data, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return out
}

// Clock is a settable clock for Options.Now (and the worker's clocks).
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a Clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
