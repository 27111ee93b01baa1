package nannyapi

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on decoded strings: a value beyond them is garbage, not data.
const (
	maxTokenLen   = 8192
	maxIDLen      = 64
	maxShortText  = 512
	maxClientID   = 128
	maxDeviceCode = 256
)

// decodeObject decodes exactly one JSON object into v, ignoring unknown
// fields and refusing anything else, trailing data included.
func decodeObject(what string, data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return decodeErrf(what, "not a json object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return decodeErr(what, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return decodeErrf(what, "trailing data after the object")
	}
	return nil
}

// validToken: visible ASCII only, so it is safe in an HTTP header.
func validToken(s string) bool {
	if s == "" || len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ValidID reports a record id that is safe in a URL path or a filter:
// 1–64 characters of A-Z, a-z, 0-9, '_' and '-' (PocketBase ids are 15
// lowercase alphanumerics).
func ValidID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// printable: valid UTF-8 without control characters (no terminal escapes),
// at most max bytes.
func printable(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// cleanText makes backend text safe to put in an error: control characters
// become '?', invalid UTF-8 is replaced, long text is cut.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// DecodeDeviceAuth decodes the answer to device-auth-start. user_code and
// verification_uri are shown to a person, so they must be printable.
func DecodeDeviceAuth(data []byte) (DeviceAuth, error) {
	const what = "device-auth-start answer"
	var d DeviceAuth
	if err := decodeObject(what, data, &d); err != nil {
		return DeviceAuth{}, err
	}
	switch {
	case !validToken(d.DeviceCode) || len(d.DeviceCode) > maxDeviceCode:
		return DeviceAuth{}, decodeErrf(what, "device_code missing or malformed")
	case !validToken(d.UserCode) || len(d.UserCode) > 64:
		return DeviceAuth{}, decodeErrf(what, "user_code missing or malformed")
	case !printable(d.VerificationURI, 2048):
		return DeviceAuth{}, decodeErrf(what, "verification_uri is not printable text")
	case d.ExpiresIn < 0 || d.ExpiresIn > 86400:
		return DeviceAuth{}, decodeErrf(what, "expires_in %d out of range", d.ExpiresIn)
	}
	if d.VerificationURI != "" {
		u, err := url.Parse(d.VerificationURI)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return DeviceAuth{}, decodeErrf(what, "verification_uri is not an http(s) url")
		}
	}
	if d.ExpiresIn == 0 {
		d.ExpiresIn = 600
	}
	return d, nil
}

// DecodeToken decodes the answer to register, refresh or renew-refresh-token:
// access_token is required; refresh_token may be "" (refresh does not rotate).
func DecodeToken(data []byte) (TokenResponse, error) {
	const what = "token answer"
	var t TokenResponse
	if err := decodeObject(what, data, &t); err != nil {
		return TokenResponse{}, err
	}
	switch {
	case !validToken(t.AccessToken):
		return TokenResponse{}, decodeErrf(what, "access_token missing or malformed")
	case t.RefreshToken != "" && !validToken(t.RefreshToken):
		return TokenResponse{}, decodeErrf(what, "refresh_token malformed")
	case t.AgentID != "" && !ValidID(t.AgentID):
		return TokenResponse{}, decodeErrf(what, "agent_id malformed")
	case t.ExpiresIn < 0 || t.RefreshTokenExpiresIn < 0:
		return TokenResponse{}, decodeErrf(what, "negative expiry")
	case !printable(t.TokenType, 64):
		return TokenResponse{}, decodeErrf(what, "token_type malformed")
	}
	return t, nil
}

// DecodeRegisterWithToken decodes the answer to register-with-token.
func DecodeRegisterWithToken(data []byte) (string, error) {
	const what = "register-with-token answer"
	var r struct {
		AgentID string `json:"agent_id"`
	}
	if err := decodeObject(what, data, &r); err != nil {
		return "", err
	}
	if !ValidID(r.AgentID) {
		return "", decodeErrf(what, "agent_id missing or malformed")
	}
	return r.AgentID, nil
}

// DecodeSuccess decodes {"success":true,"message":…} answers (ingest-metrics,
// reboot acknowledge, reboot fail). An empty body (204) is success; so is
// success given as the string "true" (investigation and patch PATCH answer
// {"success":"true"}). A body that is not such an object is an error, so an
// HTML page from a proxy never counts as accepted.
func DecodeSuccess(data []byte) error {
	const what = "success answer"
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var r struct {
		Success json.RawMessage `json:"success"`
		Message string          `json:"message"`
	}
	if err := decodeObject(what, data, &r); err != nil {
		return err
	}
	switch s := string(bytes.TrimSpace(r.Success)); s {
	case "true", `"true"`:
		return nil
	case "":
		return decodeErrf(what, "no success field")
	default:
		return decodeErrf(what, "success is %s: %s", cleanText(s, 32), cleanText(r.Message, maxShortText))
	}
}

// DecodeReboot decodes GET /api/reboot/<id>: the backend's reboot model
// ({"id","user_id","agent_id","status","reason","timeout_seconds",
// "requested_at",…} with RFC 3339 times; acknowledged_at and completed_at
// may be absent). The status must be a short word.
func DecodeReboot(data []byte) (RebootOperation, error) {
	const what = "reboot answer"
	var r RebootOperation
	if err := decodeObject(what, data, &r); err != nil {
		return RebootOperation{}, err
	}
	if err := checkRecord(what, &r); err != nil {
		return RebootOperation{}, err
	}
	if r.Status == "" || len(r.Status) > 32 || cleanText(r.Status, 32) != r.Status || strings.ContainsAny(r.Status, " \t") {
		return RebootOperation{}, decodeErrf(what, "status missing or malformed")
	}
	return r, nil
}

// DecodeStatusUpdated decodes the patch result upload answer {"status":"updated"}.
func DecodeStatusUpdated(data []byte) error {
	const what = "patch result answer"
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var r struct {
		Status string `json:"status"`
	}
	if err := decodeObject(what, data, &r); err != nil {
		return err
	}
	if r.Status != "updated" {
		return decodeErrf(what, "status %q, want \"updated\"", cleanText(r.Status, 64))
	}
	return nil
}

// DecodeInvestigationCreated decodes the 201 answer to an investigation create.
func DecodeInvestigationCreated(data []byte) (InvestigationCreated, error) {
	const what = "investigation create answer"
	var r InvestigationCreated
	if err := decodeObject(what, data, &r); err != nil {
		return InvestigationCreated{}, err
	}
	if !ValidID(r.ID) {
		return InvestigationCreated{}, decodeErrf(what, "id missing or malformed")
	}
	if r.EpisodeID != "" && !printable(r.EpisodeID, maxShortText) {
		return InvestigationCreated{}, decodeErrf(what, "episode_id malformed")
	}
	return r, nil
}

// DecodeChatCompletion decodes an AI proxy answer: choices[0].message.content
// must be a string.
func DecodeChatCompletion(data []byte) (ChatCompletion, error) {
	const what = "ai turn answer"
	var r ChatCompletion
	if err := decodeObject(what, data, &r); err != nil {
		return ChatCompletion{}, err
	}
	if len(r.Choices) == 0 {
		return ChatCompletion{}, decodeErrf(what, "no choices")
	}
	// Decoding into a string already refused an array or object content;
	// refuse a missing or null one too.
	var probe struct {
		Choices []struct {
			Message map[string]json.RawMessage `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(data, &probe); err != nil || len(probe.Choices) == 0 {
		return ChatCompletion{}, decodeErrf(what, "choices malformed")
	}
	raw := bytes.TrimSpace(probe.Choices[0].Message["content"])
	if len(raw) == 0 || raw[0] != '"' {
		return ChatCompletion{}, decodeErrf(what, "choices[0].message.content is not a string")
	}
	if r.EpisodeID != "" && !printable(r.EpisodeID, maxShortText) {
		return ChatCompletion{}, decodeErrf(what, "episode_id malformed")
	}
	return r, nil
}

// DecodeScriptInfo decodes GET /api/scripts/<id>/validate; sha256 must be
// 64 hex digits and is returned in lower case.
func DecodeScriptInfo(data []byte) (ScriptInfo, error) {
	const what = "script validate answer"
	var r ScriptInfo
	if err := decodeObject(what, data, &r); err != nil {
		return ScriptInfo{}, err
	}
	r.SHA256 = strings.ToLower(r.SHA256)
	if b, err := hex.DecodeString(r.SHA256); err != nil || len(b) != 32 {
		return ScriptInfo{}, decodeErrf(what, "sha256 is not 64 hex digits")
	}
	if !ValidID(r.ID) {
		return ScriptInfo{}, decodeErrf(what, "id missing or malformed")
	}
	if !printable(r.Name, maxShortText) {
		return ScriptInfo{}, decodeErrf(what, "name malformed")
	}
	return r, nil
}

// DecodeIngestAck decodes a Proxmox ingestion answer {"id":…,"message":…}
// and returns the record id.
func DecodeIngestAck(data []byte) (string, error) {
	const what = "proxmox ingest answer"
	var r struct {
		ID      string `json:"id"`
		Message string `json:"message"`
	}
	if err := decodeObject(what, data, &r); err != nil {
		return "", err
	}
	if !ValidID(r.ID) {
		return "", decodeErrf(what, "id missing or malformed")
	}
	return r.ID, nil
}

// DecodeHealth decodes GET /api/health: {"message":…,"code":200,"data":{}}.
func DecodeHealth(data []byte) (string, error) {
	const what = "health answer"
	var r struct {
		Message string `json:"message"`
		Code    int    `json:"code"`
	}
	if err := decodeObject(what, data, &r); err != nil {
		return "", err
	}
	if r.Code != 200 {
		return "", decodeErrf(what, "code %d", r.Code)
	}
	return cleanText(r.Message, maxShortText), nil
}

// DecodeConnect decodes the PB_CONNECT frame's data and returns the clientId.
func DecodeConnect(data []byte) (string, error) {
	const what = "realtime connect frame"
	var r struct {
		ClientID string `json:"clientId"`
	}
	if err := decodeObject(what, data, &r); err != nil {
		return "", err
	}
	if !validToken(r.ClientID) || len(r.ClientID) > maxClientID {
		return "", decodeErrf(what, "clientId missing or malformed")
	}
	return r.ClientID, nil
}

// DecodeEvent decodes a realtime frame's data for the named collection:
// {"record":{…},"action":"create|update|delete"}. For the three agent
// collections the record is decoded into its type and must have a valid id.
func DecodeEvent(collection string, data []byte) (Event, error) {
	const what = "realtime event"
	var r struct {
		Record json.RawMessage `json:"record"`
		Action string          `json:"action"`
	}
	if err := decodeObject(what, data, &r); err != nil {
		return Event{}, err
	}
	switch r.Action {
	case "create", "update", "delete":
	default:
		return Event{}, decodeErrf(what, "action %q", cleanText(r.Action, 32))
	}
	ev := Event{Collection: collection, Action: r.Action, Record: r.Record}
	var err error
	switch collection {
	case CollectionInvestigations:
		ev.Investigation, err = decodeRecord[Investigation](collection, r.Record)
	case CollectionPatchOperations:
		ev.Patch, err = decodeRecord[PatchOperation](collection, r.Record)
	case CollectionRebootOperations:
		ev.Reboot, err = decodeRecord[RebootOperation](collection, r.Record)
	default:
		if len(bytes.TrimSpace(r.Record)) == 0 || bytes.TrimSpace(r.Record)[0] != '{' {
			return Event{}, decodeErrf(what, "record is not an object")
		}
	}
	if err != nil {
		return Event{}, err
	}
	return ev, nil
}

// recordID is implemented by the three record types for validation.
type recordID interface {
	Investigation | PatchOperation | RebootOperation
}

func decodeRecord[T recordID](collection string, raw json.RawMessage) (*T, error) {
	what := collection + " record"
	var rec T
	if err := decodeObject(what, raw, &rec); err != nil {
		return nil, err
	}
	if err := checkRecord(what, any(&rec)); err != nil {
		return nil, err
	}
	return &rec, nil
}

func checkRecord(what string, rec any) error {
	var id, agent string
	switch r := rec.(type) {
	case *Investigation:
		id, agent = r.ID, r.AgentID
	case *PatchOperation:
		id, agent = r.ID, r.AgentID
		if r.LXCID != "" && !ValidID(r.LXCID) {
			return decodeErrf(what, "lxc_id malformed")
		}
		if r.ScriptID != "" && !ValidID(r.ScriptID) {
			return decodeErrf(what, "script_id malformed")
		}
	case *RebootOperation:
		id, agent = r.ID, r.AgentID
		if r.TimeoutSeconds < 0 {
			return decodeErrf(what, "negative timeout_seconds")
		}
	}
	if !ValidID(id) {
		return decodeErrf(what, "id missing or malformed")
	}
	if agent != "" && !ValidID(agent) {
		return decodeErrf(what, "agent_id malformed")
	}
	return nil
}

// DecodePage decodes one page of the records API for a collection of T.
func DecodePage[T recordID](collection string, data []byte) (Page[T], error) {
	what := collection + " records page"
	var p struct {
		Page       int               `json:"page"`
		PerPage    int               `json:"perPage"`
		TotalItems int               `json:"totalItems"`
		TotalPages int               `json:"totalPages"`
		Items      []json.RawMessage `json:"items"`
	}
	if err := decodeObject(what, data, &p); err != nil {
		return Page[T]{}, err
	}
	if p.Items == nil {
		return Page[T]{}, decodeErrf(what, "no items array")
	}
	if p.Page < 0 || p.PerPage < 0 || p.TotalItems < 0 || p.TotalPages < 0 {
		return Page[T]{}, decodeErrf(what, "negative counters")
	}
	out := Page[T]{Page: p.Page, PerPage: p.PerPage, TotalItems: p.TotalItems, TotalPages: p.TotalPages,
		Items: make([]T, 0, len(p.Items))}
	for _, raw := range p.Items {
		rec, err := decodeRecord[T](collection, raw)
		if err != nil {
			return Page[T]{}, err
		}
		out.Items = append(out.Items, *rec)
	}
	return out, nil
}

// ErrorBody is what an error answer says.
type ErrorBody struct {
	Message string
	Fields  map[string]FieldError
	AgentID string
}

// DecodeErrorBody reads an error answer: {"error":…} (custom handlers, with
// "agent_id" on "device code already used") or PocketBase's
// {"data":{…},"message":…,"status":N}. Anything else becomes a short,
// cleaned excerpt; it never fails.
func DecodeErrorBody(data []byte) ErrorBody {
	trimmed := bytes.TrimSpace(data)
	var m map[string]json.RawMessage
	if len(trimmed) == 0 {
		return ErrorBody{}
	}
	if trimmed[0] != '{' || json.Unmarshal(trimmed, &m) != nil {
		return ErrorBody{Message: "unexpected answer: " + cleanText(string(trimmed), 160)}
	}
	var out ErrorBody
	str := func(key string) (string, bool) {
		var s string
		if raw, ok := m[key]; ok && json.Unmarshal(raw, &s) == nil {
			return s, true
		}
		return "", false
	}
	if s, ok := str("error"); ok {
		out.Message = cleanText(s, maxShortText)
		if d, ok := str("error_description"); ok && d != "" {
			out.Message += ": " + cleanText(d, maxShortText)
		}
	} else if s, ok := str("message"); ok {
		out.Message = cleanText(s, maxShortText)
	}
	if id, ok := str("agent_id"); ok && ValidID(id) {
		out.AgentID = id
	}
	var fields map[string]FieldError
	if raw, ok := m["data"]; ok && json.Unmarshal(raw, &fields) == nil && len(fields) > 0 {
		out.Fields = make(map[string]FieldError, len(fields))
		for _, name := range sortedKeys(fields) {
			if len(out.Fields) == 32 {
				break
			}
			f := fields[name]
			out.Fields[cleanText(name, 64)] = FieldError{Code: cleanText(f.Code, 64), Message: cleanText(f.Message, 160)}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
