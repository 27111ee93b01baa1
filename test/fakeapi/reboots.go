package fakeapi

import (
	"encoding/json"
	"net/http"
	"time"
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
	s.st.rebootHistory[rec["id"].(string)] = []string{"sent"}
	s.emitLocked("reboot_operations", "create", rec)
	s.notify()
	return rec, http.StatusOK, ""
}

// finishRebootLocked sets a final status and clears the agent's pending reboot.
func (s *Server) finishRebootLocked(rec map[string]any, status, errMsg string) {
	rec["status"] = status
	s.st.rebootHistory[rec["id"].(string)] = append(s.st.rebootHistory[rec["id"].(string)], status)
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

// rebootMonitor runs the monitor every RebootMonitorInterval until the
// server closes.
func (s *Server) rebootMonitor() {
	defer close(s.monitorDone)
	if s.opts.RebootMonitorInterval < 0 {
		<-s.ctx.Done()
		return
	}
	t := time.NewTicker(s.opts.RebootMonitorInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.RunRebootMonitor()
		}
	}
}

// RunRebootMonitor runs one tick of the backend's reboot monitor now: an
// acknowledged ("rebooting") reboot is completed when the agent's
// last_seen is later than acknowledged_at, and times out timeout_seconds
// after acknowledged_at otherwise; a "sent" one times out timeout_seconds
// after requested_at.
func (s *Server) RunRebootMonitor() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	c := s.st.records["reboot_operations"]
	for _, id := range c.order {
		rec := c.byID[id]
		timeout := time.Duration(intOf(rec["timeout_seconds"])) * time.Second
		switch rec["status"] {
		case "sent":
			if requested, ok := parsePBTime(rec["requested_at"]); ok && now.After(requested.Add(timeout)) {
				s.finishRebootLocked(rec, "timeout", "Agent did not acknowledge reboot command")
			}
		case "rebooting":
			acked, ok := parsePBTime(rec["acknowledged_at"])
			if !ok {
				continue
			}
			// Both sides at the backend's millisecond precision.
			if a := s.st.agents[rec["agent_id"].(string)]; a != nil && a.lastSeen.Truncate(time.Millisecond).After(acked) {
				s.finishRebootLocked(rec, "completed", "")
			} else if now.After(acked.Add(timeout)) {
				s.finishRebootLocked(rec, "timeout", "Agent did not reconnect within timeout period")
			}
		}
	}
}

func parsePBTime(v any) (time.Time, bool) {
	str, _ := v.(string)
	t, err := time.Parse("2006-01-02 15:04:05.000Z", str)
	return t, err == nil
}

func intOf(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case float64:
		return int(n)
	}
	return 0
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
	s.st.rebootHistory[rec["id"].(string)] = append(s.st.rebootHistory[rec["id"].(string)], "rebooting")
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

// handleRebootGet is GET /api/reboot/<id> (the user or the agent). Its
// shape is the backend's reboot model, not the record: RFC 3339 times,
// created_at and updated_at always zero; acknowledged_at, completed_at,
// lxc_id, vmid and error_message only when set.
func (s *Server) handleRebootGet(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.authLocked(r)
	if p.kind == kindNone {
		writeErr(w, http.StatusUnauthorized, "authentication required")
		return
	}
	rec, ok := s.st.records["reboot_operations"].byID[r.PathValue("id")]
	if !ok {
		writeErr(w, http.StatusNotFound, "reboot operation not found")
		return
	}
	if !p.owns(rec) {
		writeErr(w, http.StatusForbidden, "unauthorized")
		return
	}
	out := map[string]any{"id": rec["id"], "user_id": rec["user_id"], "agent_id": rec["agent_id"], "status": rec["status"],
		"reason": rec["reason"], "timeout_seconds": rec["timeout_seconds"],
		"created_at": "0001-01-01T00:00:00Z", "updated_at": "0001-01-01T00:00:00Z"}
	for _, k := range []string{"requested_at", "acknowledged_at", "completed_at"} {
		if t, ok := parsePBTime(rec[k]); ok {
			out[k] = t.Format(time.RFC3339Nano)
		}
	}
	for _, k := range []string{"lxc_id", "vmid", "error_message"} {
		if v, _ := rec[k].(string); v != "" {
			out[k] = v
		}
	}
	writeJSON(w, http.StatusOK, out)
}
