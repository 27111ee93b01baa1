package fakeapi

import (
	"encoding/json"
	"net/http"
)

// RebootSpec describes a reboot the user requests.
type RebootSpec struct {
	Reason string
	// TimeoutSeconds defaults to 300.
	TimeoutSeconds int
	// LXCID and VMID target a container.
	LXCID string
	VMID  string
}

// createRebootLocked creates a reboot_operations record, already "sent".
func (s *Server) createRebootLocked(agentID string, spec RebootSpec) (map[string]any, int, string) {
	a, ok := s.st.agents[agentID]
	if !ok {
		return nil, http.StatusNotFound, "agent not found"
	}
	if _, pending := s.st.pendingBoot[agentID]; pending {
		return nil, http.StatusConflict, "agent already has a pending reboot"
	}
	if spec.TimeoutSeconds <= 0 {
		spec.TimeoutSeconds = 300
	}
	rec := map[string]any{
		"acknowledged_at": "", "agent_id": a.id, "collectionId": collRebootOpsID, "collectionName": "reboot_operations",
		"completed_at": "", "error_message": "", "id": pbID(), "lxc_id": spec.LXCID, "reason": spec.Reason,
		"requested_at": pbTime(s.now()), "status": "sent", "timeout_seconds": spec.TimeoutSeconds,
		"user_id": a.userID, "vmid": spec.VMID,
	}
	s.st.records["reboot_operations"].put(rec)
	s.st.pendingBoot[agentID] = rec["id"].(string)
	s.emitLocked("reboot_operations", "create", rec)
	s.notify()
	return rec, http.StatusOK, ""
}

// finishRebootLocked sets a final status and clears the agent's pending reboot.
func (s *Server) finishRebootLocked(rec map[string]any, status, errMsg string) {
	rec["status"] = status
	if status == "completed" {
		rec["completed_at"] = pbTime(s.now())
	}
	if errMsg != "" {
		rec["error_message"] = errMsg
	}
	if agentID, _ := rec["agent_id"].(string); s.st.pendingBoot[agentID] == rec["id"] {
		delete(s.st.pendingBoot, agentID)
	}
	s.emitLocked("reboot_operations", "update", rec)
	s.notify()
}

// completeRebootsLocked marks the agent's acknowledged reboots completed:
// the real monitor does so when last_seen (any metrics post) is later than
// acknowledged_at; the fake does it at that post instead of up to 30 s later.
func (s *Server) completeRebootsLocked(agentID string) {
	c := s.st.records["reboot_operations"]
	for _, id := range c.order {
		rec := c.byID[id]
		if rec["agent_id"] == agentID && rec["status"] == "rebooting" {
			s.finishRebootLocked(rec, "completed", "")
		}
	}
}

// handleRebootCreate is the user's POST /api/reboot.
func (s *Server) handleRebootCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AgentID        string `json:"agent_id"`
		Reason         string `json:"reason"`
		TimeoutSeconds int    `json:"timeout_seconds"`
		LXCID          string `json:"lxc_id"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid request body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.authLocked(r)
	switch p.kind {
	case kindNone:
		writeErr(w, http.StatusUnauthorized, "authentication required")
		return
	case kindAgent:
		writeErr(w, http.StatusForbidden, "agents cannot initiate reboots")
		return
	}
	if a, ok := s.st.agents[req.AgentID]; !ok || a.userID != p.id {
		writeErr(w, http.StatusNotFound, "agent not found")
		return
	}
	rec, status, msg := s.createRebootLocked(req.AgentID, RebootSpec{Reason: req.Reason, TimeoutSeconds: req.TimeoutSeconds, LXCID: req.LXCID})
	if rec == nil {
		writeErr(w, status, msg)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"message": "Reboot command sent. Agent will receive via realtime subscription.",
		"reboot_id": rec["id"], "status": "sent", "success": true})
}

// rebootForAgent finds the reboot for an agent call; it writes the refusal.
func (s *Server) rebootForAgentLocked(w http.ResponseWriter, r *http.Request, userMsg string) map[string]any {
	p := s.authLocked(r)
	if p.kind == kindNone {
		writeErr(w, http.StatusUnauthorized, "authentication required")
		return nil
	}
	if p.kind != kindAgent {
		writeErr(w, http.StatusForbidden, userMsg)
		return nil
	}
	rec, ok := s.st.records["reboot_operations"].byID[r.PathValue("id")]
	if !ok {
		writeErr(w, http.StatusNotFound, "reboot operation not found")
		return nil
	}
	if rec["agent_id"] != p.id {
		writeErr(w, http.StatusForbidden, "unauthorized")
		return nil
	}
	return rec
}

// handleRebootAck is POST /api/reboot/<id>/acknowledge (agent only).
func (s *Server) handleRebootAck(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.rebootForAgentLocked(w, r, "only agents can acknowledge reboots")
	if rec == nil {
		return
	}
	rec["status"] = "rebooting"
	rec["acknowledged_at"] = pbTime(s.now())
	s.emitLocked("reboot_operations", "update", rec)
	s.notify()
	writeJSON(w, http.StatusOK, success{true, "Reboot acknowledged. Agent should proceed with reboot."})
}

// handleRebootFail is POST /api/reboot/<id>/fail, registered only with
// Options.RebootFail (the observed backend has no such route: 404).
func (s *Server) handleRebootFail(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Error string `json:"error"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid request body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.rebootForAgentLocked(w, r, "only agents can report reboot failures")
	if rec == nil {
		return
	}
	raw, _ := json.Marshal(req)
	s.st.rebootFails = append(s.st.rebootFails, RebootFailPost{RebootID: rec["id"].(string), Body: string(raw)})
	s.finishRebootLocked(rec, "failed", req.Error)
	writeJSON(w, http.StatusOK, success{true, "reboot failure recorded"})
}
