package nannyapi_test

import (
	"errors"
	"testing"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

func TestPlainHTTPPolicy(t *testing.T) {
	cases := []struct {
		url    string
		policy nannyapi.PlainHTTPPolicy
		ok     bool
		warn   bool
	}{
		{"https://api.nannyai.dev", "", true, false},
		{"https://api.nannyai.dev", nannyapi.PlainHTTPRefuse, true, false},
		{"http://127.0.0.1:8090", "", true, false},
		{"http://localhost:8090", nannyapi.PlainHTTPRefuse, true, false},
		{"http://[::1]:8090", nannyapi.PlainHTTPRefuse, true, false},
		// A reference install migrated with a LAN URL keeps working, loudly.
		{"http://192.168.1.10:8090", "", true, true},
		{"http://10.0.0.5:8090", nannyapi.PlainHTTPLAN, true, true},
		{"http://100.64.1.2", "", true, true},
		{"http://[fd00::1]:8090", "", true, true},
		{"http://nanny.lan:8090", "", true, true},
		{"http://nannyapi:8090", "", true, true},
		{"http://192.168.1.10:8090", nannyapi.PlainHTTPRefuse, false, false},
		{"http://api.nannyai.dev", "", false, false},
		{"http://8.8.8.8", "", false, false},
		{"http://api.nannyai.dev", nannyapi.PlainHTTPAny, true, true},
		{"ftp://api.nannyai.dev", nannyapi.PlainHTTPAny, false, false},
		{"https://user:pw@api.nannyai.dev", "", false, false},
		{"https://api.nannyai.dev/?x=1", "", false, false},
		{"", "", false, false},
		{"https:///nohost", "", false, false},
	}
	for _, tc := range cases {
		c, err := nannyapi.New(nannyapi.Config{BaseURL: tc.url, PlainHTTP: tc.policy})
		if (err == nil) != tc.ok {
			t.Errorf("%s %q: err %v", tc.url, tc.policy, err)
			continue
		}
		if err != nil {
			if tc.url != "" && errors.Is(err, nannyapi.ErrInsecureURL) != (tc.url[:5] == "http:") {
				t.Errorf("%s: error kind %v", tc.url, err)
			}
			continue
		}
		if c.Insecure() != tc.warn || (c.Warning() != "") != tc.warn {
			t.Errorf("%s %q: insecure %v warning %q", tc.url, tc.policy, c.Insecure(), c.Warning())
		}
		c.Close()
	}
}

func TestParsePlainHTTPPolicy(t *testing.T) {
	for in, want := range map[string]nannyapi.PlainHTTPPolicy{"": nannyapi.PlainHTTPLAN, "LAN": nannyapi.PlainHTTPLAN,
		"refuse": nannyapi.PlainHTTPRefuse, " any ": nannyapi.PlainHTTPAny} {
		if got, err := nannyapi.ParsePlainHTTPPolicy(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := nannyapi.ParsePlainHTTPPolicy("yes"); err == nil {
		t.Error("yes accepted")
	}
}

func TestBasePathPrefix(t *testing.T) {
	s := newFake(t, fakeapi.Options{})
	c := newClient(t, s.URL()+"/", nannyapi.Config{})
	if c.BaseURL() != s.URL() {
		t.Errorf("base %s", c.BaseURL())
	}
}
