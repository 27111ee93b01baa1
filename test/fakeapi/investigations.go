package fakeapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

// handleInvestigationsPost is POST /api/investigations: a body with
// investigation_id is a model proxy turn, otherwise a create.
func (s *Server) handleInvestigationsPost(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	p := s.authLocked(r)
	s.mu.Unlock()
	if p.kind == kindNone {
		writeErr(w, http.StatusUnauthorized, "authentication required")
		return
	}
	if !isJSON(r) {
		writeErr(w, http.StatusBadRequest, "invalid request body")
		return
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(body, &probe) != nil {
		writeErr(w, http.StatusBadRequest, "invalid request body")
		return
	}
	var invID string
	_ = json.Unmarshal(probe["investigation_id"], &invID)
	if invID != "" {
		s.proxyTurn(w, r, p, invID, body)
		return
	}
	s.createInvestigation(w, p, body)
}

// investigationCreated is the 201 answer, in the real field order.
type investigationCreated struct {
	ID             string         `json:"id"`
	UserID         string         `json:"user_id"`
	AgentID        string         `json:"agent_id"`
	EpisodeID      string         `json:"episode_id"`
	UserPrompt     string         `json:"user_prompt"`
	Priority       string         `json:"priority"`
	Status         string         `json:"status"`
	ResolutionPlan string         `json:"resolution_plan"`
	InitiatedAt    string         `json:"initiated_at"`
	CompletedAt    *string        `json:"completed_at"`
	CreatedAt      string         `json:"created_at"`
	UpdatedAt      string         `json:"updated_at"`
	Metadata       map[string]any `json:"metadata"`
	InferenceCount int            `json:"inference_count"`
}

func (s *Server) createInvestigation(w http.ResponseWriter, p principal, body []byte) {
	var req struct {
		AgentID  string `json:"agent_id"`
		Issue    string `json:"issue"`
		Priority string `json:"priority"`
	}
	if json.Unmarshal(body, &req) != nil {
		writeErr(w, http.StatusBadRequest, "invalid request body")
		return
	}
	if len([]rune(strings.TrimSpace(req.Issue))) < 10 {
		writeErr(w, http.StatusBadRequest, "issue must be at least 10 characters long")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.st.agents[req.AgentID]
	if !ok || a.userID != p.userID {
		writeErr(w, http.StatusBadRequest, "agent not found: sql: no rows in result set")
		return
	}
	by := "user"
	if p.kind == kindAgent {
		by = "agent"
	}
	rec := s.newInvestigationLocked(a, req.Issue, req.Priority, by)
	writeJSON(w, http.StatusCreated, investigationCreated{
		ID: rec["id"].(string), UserID: a.userID, AgentID: a.id, UserPrompt: req.Issue, Priority: rec["priority"].(string),
		Status: "pending", InitiatedAt: s.now().UTC().Format(time.RFC3339Nano), CreatedAt: "0001-01-01T00:00:00Z",
		UpdatedAt: "0001-01-01T00:00:00Z", Metadata: map[string]any{"initiated_by": by},
	})
}

func (s *Server) newInvestigationLocked(a *agent, prompt, priority, by string) map[string]any {
	if priority == "" {
		priority = "medium"
	}
	rec := map[string]any{
		"agent_id": a.id, "collectionId": collInvestigationID, "collectionName": "investigations",
		"completed_at": "", "episode_id": "", "id": pbID(), "initiated_at": pbTime(s.now()),
		"metadata": map[string]any{"initiated_by": by}, "priority": priority, "resolution_plan": "",
		"status": "pending", "user_id": a.userID, "user_prompt": prompt,
	}
	s.st.records["investigations"].put(rec)
	s.emitLocked("investigations", "create", rec)
	s.notify()
	return rec
}

// chatAnswer is the backend's fixed re-serialisation of TensorZero's reply.
type chatAnswer struct {
	ID                string       `json:"id"`
	EpisodeID         string       `json:"episode_id"`
	Choices           []chatChoice `json:"choices"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	ServiceTier       *string      `json:"service_tier"`
	Object            string       `json:"object"`
	Usage             chatUsage    `json:"usage"`
}

type chatChoice struct {
	Index        int         `json:"index"`
	FinishReason string      `json:"finish_reason"`
	Message      chatMessage `json:"message"`
}

type chatMessage struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	ToolCalls []any  `json:"tool_calls"`
}

type chatUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (s *Server) proxyTurn(w http.ResponseWriter, r *http.Request, p principal, invID string, body []byte) {
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	s.mu.Lock()
	rec, ok := s.st.records["investigations"].byID[invID]
	switch {
	case !ok:
		s.mu.Unlock()
		writeErr(w, http.StatusNotFound, "investigation not found")
		return
	case rec["user_id"] != p.userID:
		s.mu.Unlock()
		writeErr(w, http.StatusForbidden, "unauthorized")
		return
	}
	s.mu.Unlock()
	if json.Unmarshal(body, &req) != nil {
		writeErr(w, http.StatusBadRequest, "invalid TensorZero request format")
		return
	}
	turn := AITurn{InvestigationID: invID, AgentID: p.id, Model: req.Model}
	for _, m := range req.Messages {
		var content string
		raw := bytes.TrimSpace(m.Content)
		if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &content) != nil {
			writeErr(w, http.StatusBadRequest, "invalid TensorZero request format")
			return
		}
		turn.Messages = append(turn.Messages, Message{Role: m.Role, Content: content})
	}
	s.mu.Lock()
	s.st.rounds[invID]++
	turn.Round = s.st.rounds[invID]
	ai := s.opts.AI
	s.mu.Unlock()
	content, err := callAI(r, ai, turn)
	s.mu.Lock()
	s.st.aiTurns = append(s.st.aiTurns, AITurnRecord{AITurn: turn, Answer: content, Err: errString(err), Body: body})
	s.notify()
	s.mu.Unlock()
	if err != nil {
		writeErr(w, http.StatusBadRequest, "TensorZero error: "+err.Error())
		return
	}
	episode := s.advanceInvestigation(invID, content)
	writeJSON(w, http.StatusOK, chatAnswer{
		ID: uuid(), EpisodeID: episode,
		Choices: []chatChoice{{Index: 0, FinishReason: "stop", Message: chatMessage{Role: "assistant", Content: content, ToolCalls: []any{}}}},
		Created: s.now().Unix(), Model: "tensorzero::function_name::diagnose_and_heal_application::variant_name::fake",
		Object: "chat.completion", Usage: chatUsage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30},
	})
}

func callAI(r *http.Request, ai AI, turn AITurn) (string, error) {
	if ai == nil {
		return "", errNoAI
	}
	return ai.Turn(r.Context(), turn)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// advanceInvestigation applies a turn: the first one stores episode_id and
// sets in_progress; a resolution with a non-empty plan completes it. Each
// change is an update frame.
func (s *Server) advanceInvestigation(id, content string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.st.records["investigations"].byID[id]
	if rec["episode_id"] == "" {
		rec["episode_id"] = uuid()
		if rec["status"] == "pending" {
			rec["status"] = "in_progress"
		}
		s.emitLocked("investigations", "update", rec)
	}
	var res struct {
		ResponseType   string `json:"response_type"`
		ResolutionPlan string `json:"resolution_plan"`
	}
	if json.Unmarshal([]byte(content), &res) == nil && res.ResponseType == "resolution" && res.ResolutionPlan != "" {
		rec["resolution_plan"] = res.ResolutionPlan
		rec["status"] = "completed"
		rec["completed_at"] = pbTime(s.now())
		s.emitLocked("investigations", "update", rec)
	}
	s.notify()
	return rec["episode_id"].(string)
}

// handleInvestigationPatch is PATCH /api/investigations?id=: it takes only
// status, resolution_plan and episode_id and answers {"success":"true"}.
func (s *Server) handleInvestigationPatch(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	var body map[string]any
	if err := decodeBody(r, &body); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid request body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.authLocked(r)
	if p.kind == kindNone {
		writeErr(w, http.StatusUnauthorized, "authentication required")
		return
	}
	rec, ok := s.st.records["investigations"].byID[id]
	if !ok {
		writeErr(w, http.StatusNotFound, "investigation not found")
		return
	}
	if rec["user_id"] != p.userID {
		writeErr(w, http.StatusForbidden, "unauthorized")
		return
	}
	s.st.invPatches = append(s.st.invPatches, InvestigationPatch{ID: id, AgentID: p.id, Body: body})
	for _, k := range []string{"status", "resolution_plan", "episode_id"} {
		if v, ok := body[k].(string); ok {
			rec[k] = v
		}
	}
	if st, _ := body["status"].(string); st == "completed" || st == "failed" {
		rec["completed_at"] = pbTime(s.now())
	}
	s.emitLocked("investigations", "update", rec)
	s.notify()
	writeJSON(w, http.StatusOK, map[string]string{"success": "true"})
}
