package nannyapi_test

import (
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// Each decoder of a backend answer has a fuzz target. Seeds: the verbatim
// answers in testdata/verbatim.json (f.Add) and the committed corpus in
// testdata/fuzz/<Target>/. A target fails on a panic or when a successful
// decode breaks its invariants (see decodeBy).

func fuzzDecoder(f *testing.F, decoder string) {
	for _, v := range loadVerbatim(f) {
		if v.Decoder == decoder {
			f.Add([]byte(v.Body))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := decodeBy(decoder, "", body); err != nil && strings.HasPrefix(err.Error(), "invariant:") {
			t.Fatal(err)
		}
	})
}

func fuzzCollectionDecoder(f *testing.F, decoder string) {
	for _, v := range loadVerbatim(f) {
		if v.Decoder == decoder {
			f.Add(v.Collection, []byte(v.Body))
		}
	}
	f.Fuzz(func(t *testing.T, collection string, body []byte) {
		if err := decodeBy(decoder, collection, body); err != nil && strings.HasPrefix(err.Error(), "invariant:") {
			t.Fatal(err)
		}
	})
}

func FuzzDecodeDeviceAuth(f *testing.F)           { fuzzDecoder(f, "DeviceAuth") }
func FuzzDecodeToken(f *testing.F)                { fuzzDecoder(f, "Token") }
func FuzzDecodeRegisterWithToken(f *testing.F)    { fuzzDecoder(f, "RegisterWithToken") }
func FuzzDecodeSuccess(f *testing.F)              { fuzzDecoder(f, "Success") }
func FuzzDecodeStatusUpdated(f *testing.F)        { fuzzDecoder(f, "StatusUpdated") }
func FuzzDecodeInvestigationCreated(f *testing.F) { fuzzDecoder(f, "InvestigationCreated") }
func FuzzDecodeChatCompletion(f *testing.F)       { fuzzDecoder(f, "ChatCompletion") }
func FuzzDecodeScriptInfo(f *testing.F)           { fuzzDecoder(f, "ScriptInfo") }
func FuzzDecodeIngestAck(f *testing.F)            { fuzzDecoder(f, "IngestAck") }
func FuzzDecodeHealth(f *testing.F)               { fuzzDecoder(f, "Health") }
func FuzzDecodeReboot(f *testing.F)               { fuzzDecoder(f, "Reboot") }
func FuzzDecodeConnect(f *testing.F)              { fuzzDecoder(f, "Connect") }
func FuzzDecodeErrorBody(f *testing.F)            { fuzzDecoder(f, "ErrorBody") }
func FuzzDecodeEvent(f *testing.F)                { fuzzCollectionDecoder(f, "Event") }
func FuzzDecodePage(f *testing.F)                 { fuzzCollectionDecoder(f, "Page") }

// FuzzScriptIDFromURL: a record's script_url is untrusted; an accepted one
// is a clean /api/files/ path and its id is a valid record id.
func FuzzScriptIDFromURL(f *testing.F) {
	for _, s := range []string{"/api/files/pbc_1280174292/nl52d78j6pgcswd/apt_update_0m7hixffos.sh", "/api/files/a/b/../c", "http://evil/api/files/a/b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		id, err := nannyapi.ScriptIDFromURL(u)
		if err != nil {
			return
		}
		p, _, _ := strings.Cut(u, "?")
		if !nannyapi.ValidID(id) || !strings.HasPrefix(p, "/api/files/") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
			t.Fatalf("accepted %q as %q", u, id)
		}
	})
}
