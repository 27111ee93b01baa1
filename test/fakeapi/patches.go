package fakeapi

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

func (s *Server) addScriptLocked(family, name string, content []byte) *script {
	sum := sha256.Sum256(content)
	base := strings.TrimSuffix(strings.ReplaceAll(name, "-", "_"), ".sh")
	sc := &script{id: pbID(), family: family, name: name, file: base + "_" + randomFrom(idAlphabet, 10) + ".sh",
		content: content, sha256: hex.EncodeToString(sum[:])}
	s.st.scripts[sc.id] = sc
	return sc
}

func (s *Server) scriptForLocked(family string) *script {
	var found *script
	for _, sc := range s.st.scripts {
		if sc.family == family && (found == nil || sc.name < found.name) {
			found = sc
		}
	}
	return found
}

// PatchSpec describes a patch operation the user creates.
type PatchSpec struct {
	// Mode is "dry-run" or "apply".
	Mode string
	// LXCID and VMID target a container.
	LXCID string
	VMID  string
	// Exclusions become the record's exclusions (nil is JSON null).
	Exclusions []string
	// ScriptID picks a script (default: the one for the agent's platform family).
	ScriptID string
	// ScriptURL overrides the record's script_url (e.g. an absolute URL on another host).
	ScriptURL string
}

// createPatchLocked creates a patch_operations record; status code and
// message on refusal.
func (s *Server) createPatchLocked(agentID string, spec PatchSpec) (map[string]any, *script, int, string) {
	if spec.Mode != "dry-run" && spec.Mode != "apply" {
		return nil, nil, http.StatusBadRequest, "invalid mode: must be dry-run or apply"
	}
	a, ok := s.st.agents[agentID]
	if !ok {
		return nil, nil, http.StatusBadRequest, "agent not found"
	}
	sc := s.st.scripts[spec.ScriptID]
	if sc == nil {
		family, _ := a.host["platform_family"].(string)
		sc = s.scriptForLocked(family)
	}
	if sc == nil {
		return nil, nil, http.StatusBadRequest, "no patch script for this agent's platform"
	}
	url := spec.ScriptURL
	if url == "" {
		url = "/api/files/" + collScriptsID + "/" + sc.id + "/" + sc.file
	}
	var exclusions any
	if spec.Exclusions != nil {
		exclusions = append([]string{}, spec.Exclusions...)
	}
	rec := map[string]any{
		"agent_id": a.id, "collectionId": collPatchOpsID, "collectionName": "patch_operations",
		"completed_at": "", "error_msg": "", "exclusions": exclusions, "exit_code": 0, "id": pbID(),
		"lxc_id": spec.LXCID, "mode": spec.Mode, "output_path": "", "script_id": sc.id, "script_url": url,
		"started_at": "", "status": "pending", "stderr_file": "", "stdout_file": "", "user_id": a.userID,
		"vmid": spec.VMID,
	}
	s.st.records["patch_operations"].put(rec)
	s.emitLocked("patch_operations", "create", rec)
	s.notify()
	return rec, sc, http.StatusCreated, ""
}

// handlePatchCreate is the user's POST /api/patches.
func (s *Server) handlePatchCreate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AgentID string `json:"agent_id"`
		Mode    string `json:"mode"`
		LXCID   string `json:"lxc_id"`
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
		writeErr(w, http.StatusForbidden, "only users can create patch operations")
		return
	}
	if a, ok := s.st.agents[req.AgentID]; !ok || a.userID != p.id {
		writeErr(w, http.StatusBadRequest, "agent not found")
		return
	}
	rec, sc, status, msg := s.createPatchLocked(req.AgentID, PatchSpec{Mode: req.Mode, LXCID: req.LXCID})
	if rec == nil {
		writeErr(w, status, msg)
		return
	}
	writeJSON(w, http.StatusCreated, struct {
		ID           string `json:"id"`
		UserID       string `json:"user_id"`
		AgentID      string `json:"agent_id"`
		Mode         string `json:"mode"`
		Status       string `json:"status"`
		ScriptURL    string `json:"script_url"`
		ScriptSHA256 string `json:"script_sha256"`
		CreatedAt    string `json:"created_at"`
		UpdatedAt    string `json:"updated_at"`
	}{rec["id"].(string), p.id, req.AgentID, req.Mode, "pending", rec["script_url"].(string), sc.sha256,
		"0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"})
}

// handleScriptValidate is GET /api/scripts/<id>/validate.
func (s *Server) handleScriptValidate(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.authLocked(r).kind == kindNone {
		writeErr(w, http.StatusUnauthorized, "authentication required")
		return
	}
	sc, ok := s.st.scripts[r.PathValue("id")]
	if !ok {
		writeErr(w, http.StatusNotFound, "script not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": sc.id, "name": sc.name, "sha256": sc.sha256})
}

// handleFile serves /api/files/<collection id or name>/<record>/<file>
// without auth, as the real backend does for scripts and patch outputs.
func (s *Server) handleFile(w http.ResponseWriter, r *http.Request) {
	coll, recID, file := r.PathValue("collection"), r.PathValue("record"), r.PathValue("file")
	s.mu.Lock()
	var data []byte
	var ok bool
	switch coll {
	case collScriptsID, "scripts":
		if sc, found := s.st.scripts[recID]; found && sc.file == file {
			data, ok = sc.content, true
			if sc.served != nil {
				data = sc.served
			}
		}
	case collPatchOpsID, "patch_operations":
		data, ok = s.st.files["patch_operations/"+recID+"/"+file]
	}
	s.mu.Unlock()
	if !ok {
		writePB(w, http.StatusNotFound, "The requested resource wasn't found.", nil)
		return
	}
	ctype := "text/plain; charset=utf-8"
	if strings.HasSuffix(file, ".sh") {
		ctype = "text/x-shellscript"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": file}))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// handlePatchResult is the agent's multipart upload. Only the exit_code
// field decides: exactly "0" is completed, anything else (missing, a JSON
// body) failed.
func (s *Server) handlePatchResult(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	p := s.authLocked(r)
	rec, found := s.st.records["patch_operations"].byID[id]
	s.mu.Unlock()
	switch {
	case p.kind == kindNone:
		writeErr(w, http.StatusUnauthorized, "authentication required")
		return
	case p.kind != kindAgent:
		writeErr(w, http.StatusForbidden, "only agents can upload results")
		return
	case !found:
		writeErr(w, http.StatusNotFound, "patch operation not found")
		return
	case rec["agent_id"] != p.id:
		writeErr(w, http.StatusForbidden, "unauthorized: operation does not belong to agent")
		return
	}
	post := PatchResultPost{OperationID: id, AgentID: p.id, ContentType: r.Header.Get("Content-Type"), Fields: map[string][]string{}}
	if err := r.ParseMultipartForm(s.opts.MaxBodyBytes); err == nil && r.MultipartForm != nil {
		post.Fields = r.MultipartForm.Value
		post.Stdout, post.StdoutName = formFile(r, "stdout_file")
		post.Stderr, post.StderrName = formFile(r, "stderr_file")
		_ = r.MultipartForm.RemoveAll()
	}
	exit := ""
	if v := post.Fields["exit_code"]; len(v) > 0 {
		exit = v[0]
	}
	code, _ := strconv.Atoi(exit)
	status := "failed"
	if exit == "0" {
		status = "completed"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	outName := "stdout_" + randomFrom(idAlphabet, 10) + ".log"
	errName := "stderr_" + randomFrom(idAlphabet, 10) + ".log"
	s.st.files["patch_operations/"+id+"/"+outName] = post.Stdout
	s.st.files["patch_operations/"+id+"/"+errName] = post.Stderr
	rec["status"], rec["exit_code"], rec["completed_at"] = status, code, pbTime(s.now())
	rec["stdout_file"], rec["stderr_file"] = outName, errName
	s.st.patchResults = append(s.st.patchResults, post)
	s.emitLocked("patch_operations", "update", rec)
	s.notify()
	writeJSON(w, http.StatusOK, map[string]string{"status": "updated"})
}

func formFile(r *http.Request, field string) ([]byte, string) {
	f, h, err := r.FormFile(field)
	if err != nil {
		return nil, ""
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, h.Filename
	}
	return data, h.Filename
}

// handlePatchStatus is PATCH /api/patches?id= {"status","output_path",
// "error_msg"}: "running" sets started_at; "completed" and "failed" set
// completed_at; error_msg and output_path are stored when not empty, as
// the backend's update handler does.
func (s *Server) handlePatchStatus(w http.ResponseWriter, r *http.Request) {
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
	rec, ok := s.st.records["patch_operations"].byID[id]
	if !ok || (rec["agent_id"] != p.id && rec["user_id"] != p.id) {
		writeErr(w, http.StatusNotFound, "patch operation not found")
		return
	}
	s.st.patchPatches = append(s.st.patchPatches, PatchStatusPost{OperationID: id, Body: body})
	if st, ok := body["status"].(string); ok {
		rec["status"] = st
		switch st {
		case "running":
			rec["started_at"] = pbTime(s.now())
		case "completed", "failed":
			rec["completed_at"] = pbTime(s.now())
		}
	}
	for _, key := range []string{"error_msg", "output_path"} {
		if v, ok := body[key].(string); ok && v != "" {
			rec[key] = v
		}
	}
	s.emitLocked("patch_operations", "update", rec)
	s.notify()
	writeJSON(w, http.StatusOK, map[string]string{"success": "true"})
}
