package nannyapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// verbatim is testdata/verbatim.json: backend answers copied from
// nannyapi-backend.md (JWT signatures the document elides with "…" are
// filled in with base64url text; register-with-token and the renew answer
// come from the contract, as the observed backend lacks them).
type verbatim struct {
	Name       string `json:"name"`
	Decoder    string `json:"decoder"`
	Collection string `json:"collection"`
	Body       string `json:"body"`
	OK         bool   `json:"ok"`
}

func loadVerbatim(t testing.TB) []verbatim {
	t.Helper()
	data, err := os.ReadFile("testdata/verbatim.json")
	if err != nil {
		t.Fatal(err)
	}
	var out []verbatim
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// decodeBy runs the named decoder and checks the invariants every
// successful decode must hold. It returns the decoder's error, or a
// description of a broken invariant prefixed "invariant:".
func decodeBy(decoder, collection string, body []byte) error {
	switch decoder {
	case "DeviceAuth":
		d, err := nannyapi.DecodeDeviceAuth(body)
		if err == nil && (!visible(d.DeviceCode) || !visible(d.UserCode) || d.ExpiresIn <= 0 || !clean(d.VerificationURI)) {
			return fmt.Errorf("invariant: %+v", d)
		}
		return err
	case "Token":
		tok, err := nannyapi.DecodeToken(body)
		if err == nil && (!visible(tok.AccessToken) || (tok.RefreshToken != "" && !visible(tok.RefreshToken)) ||
			(tok.AgentID != "" && !nannyapi.ValidID(tok.AgentID)) || tok.ExpiresIn < 0) {
			return fmt.Errorf("invariant: %v", tok)
		}
		return err
	case "RegisterWithToken":
		id, err := nannyapi.DecodeRegisterWithToken(body)
		if err == nil && !nannyapi.ValidID(id) {
			return fmt.Errorf("invariant: %q", id)
		}
		return err
	case "Success":
		return nannyapi.DecodeSuccess(body)
	case "StatusUpdated":
		return nannyapi.DecodeStatusUpdated(body)
	case "InvestigationCreated":
		r, err := nannyapi.DecodeInvestigationCreated(body)
		if err == nil && !nannyapi.ValidID(r.ID) {
			return fmt.Errorf("invariant: %+v", r)
		}
		return err
	case "ChatCompletion":
		r, err := nannyapi.DecodeChatCompletion(body)
		if err == nil && len(r.Choices) == 0 {
			return errors.New("invariant: no choices")
		}
		return err
	case "ScriptInfo":
		r, err := nannyapi.DecodeScriptInfo(body)
		if err == nil && (len(r.SHA256) != 64 || strings.ToLower(r.SHA256) != r.SHA256 || !nannyapi.ValidID(r.ID)) {
			return fmt.Errorf("invariant: %+v", r)
		}
		return err
	case "IngestAck":
		id, err := nannyapi.DecodeIngestAck(body)
		if err == nil && !nannyapi.ValidID(id) {
			return fmt.Errorf("invariant: %q", id)
		}
		return err
	case "Reboot":
		r, err := nannyapi.DecodeReboot(body)
		if err == nil && (!nannyapi.ValidID(r.ID) || r.Status == "" || !clean(r.Status) || r.TimeoutSeconds < 0) {
			return fmt.Errorf("invariant: %+v", r)
		}
		return err
	case "Health":
		msg, err := nannyapi.DecodeHealth(body)
		if err == nil && !clean(msg) {
			return fmt.Errorf("invariant: %q", msg)
		}
		return err
	case "Connect":
		id, err := nannyapi.DecodeConnect(body)
		if err == nil && !visible(id) {
			return fmt.Errorf("invariant: %q", id)
		}
		return err
	case "Event":
		ev, err := nannyapi.DecodeEvent(collection, body)
		if err != nil {
			return err
		}
		known := map[string]bool{nannyapi.CollectionInvestigations: ev.Investigation != nil,
			nannyapi.CollectionPatchOperations: ev.Patch != nil, nannyapi.CollectionRebootOperations: ev.Reboot != nil}
		if set, isKnown := known[collection]; isKnown && !set {
			return fmt.Errorf("invariant: no typed record for %s", collection)
		}
		if ev.Action != "create" && ev.Action != "update" && ev.Action != "delete" {
			return fmt.Errorf("invariant: action %q", ev.Action)
		}
		return nil
	case "Page":
		return decodePage(collection, body)
	case "ErrorBody":
		eb := nannyapi.DecodeErrorBody(body)
		if !clean(eb.Message) || len(eb.Message) > 1200 || len(eb.Fields) > 32 {
			return fmt.Errorf("invariant: %q", eb.Message)
		}
		for k, f := range eb.Fields {
			if !clean(k) || !clean(f.Code) || !clean(f.Message) {
				return fmt.Errorf("invariant: field %q", k)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown decoder %s", decoder)
}

func decodePage(collection string, body []byte) error {
	var ids []string
	var err error
	switch collection {
	case nannyapi.CollectionInvestigations:
		var p nannyapi.Page[nannyapi.Investigation]
		p, err = nannyapi.DecodePage[nannyapi.Investigation](collection, body)
		for _, it := range p.Items {
			ids = append(ids, it.ID)
		}
	case nannyapi.CollectionPatchOperations:
		var p nannyapi.Page[nannyapi.PatchOperation]
		p, err = nannyapi.DecodePage[nannyapi.PatchOperation](collection, body)
		for _, it := range p.Items {
			ids = append(ids, it.ID)
		}
	default:
		var p nannyapi.Page[nannyapi.RebootOperation]
		p, err = nannyapi.DecodePage[nannyapi.RebootOperation](collection, body)
		for _, it := range p.Items {
			ids = append(ids, it.ID)
		}
	}
	for _, id := range ids {
		if !nannyapi.ValidID(id) {
			return fmt.Errorf("invariant: item id %q", id)
		}
	}
	return err
}

func visible(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func clean(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func TestDecodeVerbatimAnswers(t *testing.T) {
	for _, v := range loadVerbatim(t) {
		err := decodeBy(v.Decoder, v.Collection, []byte(v.Body))
		if (err == nil) != v.OK {
			t.Errorf("%s: %v", v.Name, err)
		}
	}
}

func TestDecodeVerbatimValues(t *testing.T) {
	by := map[string]verbatim{}
	for _, v := range loadVerbatim(t) {
		by[v.Name] = v
	}
	ev, err := nannyapi.DecodeEvent("patch_operations", []byte(by["event_patch_lxc"].Body))
	if err != nil || ev.Patch.VMID != "100" || ev.Patch.Exclusions != nil || ev.Patch.LXCID != "7sfzjqlwhc0ptu5" {
		t.Errorf("lxc patch %+v %v", ev.Patch, err)
	}
	ev, _ = nannyapi.DecodeEvent("reboot_operations", []byte(by["event_reboot_create"].Body))
	if ev.Reboot.RequestedTime().Format("2006-01-02T15:04:05.000Z") != "2026-11-25T21:41:12.007Z" {
		t.Errorf("requested_at %v", ev.Reboot.RequestedTime())
	}
	ev, _ = nannyapi.DecodeEvent("investigations", []byte(by["event_investigation_completed"].Body))
	if ev.Investigation.Status != "completed" || !strings.HasPrefix(ev.Investigation.ResolutionPlan, "1. Identify") || ev.Investigation.InitiatedByAgent() {
		t.Errorf("investigation %+v", ev.Investigation)
	}
	cc, _ := nannyapi.DecodeChatCompletion([]byte(by["ai_turn"].Body))
	if !strings.HasPrefix(cc.Content(), `{"response_type": "diagnostic"`) || cc.EpisodeID != "0d83ec5f-be6e-4dd0-8396-0b86d3a5b7d2" {
		t.Errorf("chat %+v", cc)
	}
	eb := nannyapi.DecodeErrorBody([]byte(by["error_code_used"].Body))
	if eb.Message != "device code already used" || eb.AgentID != "6ybfg6bq7mxtjoj" {
		t.Errorf("code used %+v", eb)
	}
	eb = nannyapi.DecodeErrorBody([]byte(by["error_pb_validation"].Body))
	if eb.Message != "Something went wrong while processing your request." || eb.Fields["quorate"].Code != "validation_required" {
		t.Errorf("validation %+v", eb)
	}
}

func TestDecodeRefusesGarbage(t *testing.T) {
	cases := []struct{ decoder, collection, body string }{
		{"DeviceAuth", "", `null`},
		{"DeviceAuth", "", `[]`},
		{"DeviceAuth", "", `<html>proxy login</html>`},
		{"DeviceAuth", "", `{"device_code":"","user_code":"7ETMY7RT","expires_in":600}`},
		{"DeviceAuth", "", `{"device_code":"5fa7","user_code":"\u001b[31mX","expires_in":600}`},
		{"DeviceAuth", "", `{"device_code":"5fa7","user_code":"ABC","verification_uri":"javascript:alert(1)"}`},
		{"DeviceAuth", "", `{"device_code":"5fa7","user_code":"ABC","expires_in":"600"}`},
		{"DeviceAuth", "", `{"device_code":"5fa7","user_code":"ABC"}{}`},
		{"Token", "", `{}`},
		{"Token", "", `{"access_token":"a b"}`},
		{"Token", "", `{"access_token":"abc\r\nX-Evil: 1"}`},
		{"Token", "", `{"access_token":"abc","agent_id":"../x"}`},
		{"Token", "", `{"access_token":"abc","expires_in":-1}`},
		{"Token", "", `{"error":"invalid refresh token"}`},
		{"RegisterWithToken", "", `{"error":"unknown action"}`},
		{"Success", "", `<html>ok</html>`},
		{"Success", "", `{"success":false,"message":"nope"}`},
		{"Success", "", `{"message":"metrics recorded"}`},
		{"Success", "", `{"success":"false"}`},
		{"StatusUpdated", "", `{"status":"failed"}`},
		{"InvestigationCreated", "", `{"id":""}`},
		{"InvestigationCreated", "", `{"id":"a/b"}`},
		{"ChatCompletion", "", `{"choices":[]}`},
		{"ChatCompletion", "", `{"choices":[{"message":{"role":"assistant","content":[{"type":"text","text":"x"}]}}]}`},
		{"ChatCompletion", "", `{"choices":[{"message":{"role":"assistant","content":null}}]}`},
		{"ChatCompletion", "", `{"choices":[{"message":{"role":"assistant"}}]}`},
		{"ScriptInfo", "", `{"id":"nl52d78j6pgcswd","name":"a","sha256":"89c8"}`},
		{"ScriptInfo", "", `{"id":"nl52d78j6pgcswd","name":"a","sha256":"zz839cc25343154e994e43a1244cb561842101d0482948d6873670d4afe493e"}`},
		{"IngestAck", "", `{"message":"Node ingested successfully"}`},
		{"Health", "", `{"message":"API is healthy.","code":500}`},
		{"Connect", "", `{"clientId":""}`},
		{"Connect", "", `{"clientId":"a b"}`},
		{"Event", "investigations", `{"record":{"id":"x"},"action":"bogus"}`},
		{"Event", "investigations", `{"record":{"user_prompt":"no id"},"action":"create"}`},
		{"Event", "investigations", `{"record":"nope","action":"create"}`},
		{"Event", "patch_operations", `{"record":{"id":"abc","vmid":true},"action":"create"}`},
		{"Event", "patch_operations", `{"record":{"id":"abc","exclusions":"pkg"},"action":"create"}`},
		{"Event", "patch_operations", `{"record":{"id":"abc","lxc_id":"../../etc"},"action":"create"}`},
		{"Event", "reboot_operations", `{"record":{"id":"abc","timeout_seconds":-5},"action":"create"}`},
		{"Event", "reboot_operations", `{"record":{"id":"abc","timeout_seconds":"120"},"action":"create"}`},
		{"Event", "sbom_scans", `{"record":[],"action":"create"}`},
		{"Page", "patch_operations", `{"page":1,"perPage":30,"totalItems":0,"totalPages":0}`},
		{"Page", "patch_operations", `{"page":1,"items":[{"id":""}]}`},
		{"Page", "reboot_operations", `{"page":-1,"items":[]}`},
	}
	for _, tc := range cases {
		err := decodeBy(tc.decoder, tc.collection, []byte(tc.body))
		if err == nil {
			t.Errorf("%s accepted %s", tc.decoder, tc.body)
			continue
		}
		var de *nannyapi.DecodeError
		if tc.decoder != "ErrorBody" && !errors.As(err, &de) {
			t.Errorf("%s %s: error %v is not a DecodeError", tc.decoder, tc.body, err)
		}
	}
}

func TestDecodeErrorBodyCleansText(t *testing.T) {
	for body, want := range map[string]string{
		`<html>502 Bad Gateway</html>`:                                              "unexpected answer: <html>502 Bad Gateway</html>",
		"{\"error\":\"bad\\u001b[2Jthing\"}":                                        "bad?[2Jthing",
		`{"error":"x","error_description":"more"}`:                                  "x: more",
		`{"message":"The requested resource wasn't found.","status":404,"data":{}}`: "The requested resource wasn't found.",
		``: "",
	} {
		if got := nannyapi.DecodeErrorBody([]byte(body)).Message; got != want {
			t.Errorf("%q: %q, want %q", body, got, want)
		}
	}
	long := nannyapi.DecodeErrorBody([]byte(strings.Repeat("x", 10000))).Message
	if len(long) > 200 {
		t.Errorf("long body kept %d bytes", len(long))
	}
}

func TestMetadataIsLenient(t *testing.T) {
	for body, want := range map[string]string{
		`{"initiated_by":"agent"}`: "agent", `null`: "", `""`: "", `{}`: "", `{"initiated_by":5}`: "", `[1]`: "",
	} {
		ev, err := nannyapi.DecodeEvent("investigations", []byte(`{"record":{"id":"8vdpgwejcaa7p3q","metadata":`+body+`},"action":"create"}`))
		if err != nil || ev.Investigation.Metadata.InitiatedBy != want {
			t.Errorf("%s: %+v %v", body, ev.Investigation, err)
		}
	}
}

func TestFlexString(t *testing.T) {
	for in, want := range map[string]string{`"100"`: "100", `100`: "100", `null`: "", `1e2`: "1e2", `""`: ""} {
		var f nannyapi.FlexString
		if err := json.Unmarshal([]byte(in), &f); err != nil || string(f) != want {
			t.Errorf("%s: %q %v", in, f, err)
		}
	}
	for _, in := range []string{`true`, `{}`, `[]`} {
		var f nannyapi.FlexString
		if err := json.Unmarshal([]byte(in), &f); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}

func TestTokenResponseHidesTokens(t *testing.T) {
	tr := nannyapi.TokenResponse{AccessToken: "eyJsecret", RefreshToken: "6c4cc1db4825516cb3b36826c283a7a2", AgentID: "6ybfg6bq7mxtjoj"}
	for _, s := range []string{fmt.Sprint(tr), fmt.Sprintf("%v", tr), fmt.Sprintf("%+v", tr), fmt.Sprintf("%#v", tr)} {
		if strings.Contains(s, "eyJsecret") || strings.Contains(s, "6c4cc1db") {
			t.Errorf("token shown: %s", s)
		}
	}
	st := nannyapi.StaticToken{Token: "nsk_supersecret", AgentID: "a"}
	if s := fmt.Sprintf("%v %+v %#v", st, st, st); strings.Contains(s, "supersecret") {
		t.Errorf("static token shown: %s", s)
	}
}

func TestScriptIDFromURL(t *testing.T) {
	for in, want := range map[string]string{
		"/api/files/pbc_1280174292/nl52d78j6pgcswd/apt_update_0m7hixffos.sh":       "nl52d78j6pgcswd",
		"/api/files/scripts/nl52d78j6pgcswd/apt_update_0m7hixffos.sh?download=1":   "nl52d78j6pgcswd",
		"/api/files/pbc_1280174292/nl52d78j6pgcswd/../../agent":                    "",
		"/api/files/pbc_1280174292/nl52d78j6pgcswd":                                "",
		"/api/files//nl52d78j6pgcswd/x.sh":                                         "",
		"/api/scripts/nl52d78j6pgcswd/apt.sh":                                      "",
		"/api/files/pbc_1280174292/nl52d78j6pgcswd/apt_update_0m7hixffos.sh/extra": "",
	} {
		got, err := nannyapi.ScriptIDFromURL(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("%s: %q %v", in, got, err)
		}
	}
}
