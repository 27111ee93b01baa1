package nannyapi_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// TestIngestAnswers: 200, 201 and an empty 204 are success; a 200 that is
// not the backend's JSON (a proxy's HTML page) is not.
func TestIngestAnswers(t *testing.T) {
	cases := []struct {
		status int
		body   string
		ok     bool
	}{
		{200, `{"success":true,"message":"metrics recorded"}`, true},
		{201, `{"success":true}`, true},
		{204, ``, true},
		{200, `<html><body>Welcome to the captive portal</body></html>`, false},
		{200, `{"success":false,"message":"nope"}`, false},
		{202, `{"success":true}`, true},
	}
	for _, tc := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte(tc.body))
		}))
		c := newClient(t, srv.URL, nannyapi.Config{}).WithCredentials(&bearer{token: "t0ken"})
		err := c.IngestMetrics(ctxT(t), sampleMetrics())
		if (err == nil) != tc.ok {
			t.Errorf("%d %q: %v", tc.status, tc.body, err)
		}
		srv.Close()
	}
}

// TestErrorsNeverCarryTheToken: a hostile backend echoing the bearer token
// in its error text does not get it into our error strings.
func TestErrorsNeverCarryTheToken(t *testing.T) {
	const secret = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2ln"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"bad token ` + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") + `"}`))
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, nannyapi.Config{})
	_, err := c.WithCredentials(&bearer{token: secret}).ListInvestigations(ctxT(t), nannyapi.RecordQuery{})
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("err %v", err)
	}
	_, err = c.Refresh(ctxT(t), "6c4cc1db4825516cb3b36826c283a7a2")
	if err == nil || strings.Contains(err.Error(), "6c4cc1db4825516cb3b36826c283a7a2") {
		t.Errorf("refresh err %v", err)
	}
}

func TestRebootFailOnNewerBackend(t *testing.T) {
	s := newFake(t, fakeapi.Options{RebootFail: true})
	ag := s.AddAgent("", "a", "debian")
	rb, _ := s.CreateReboot(ag.ID, fakeapi.RebootSpec{Reason: "r"})
	c := newClient(t, s.URL(), nannyapi.Config{}).WithCredentials(&bearer{token: ag.AccessToken})
	if err := c.FailReboot(ctxT(t), rb, "pct reboot 100: exit status 2"); err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.Record("reboot_operations", rb); rec["status"] != "failed" || rec["error_message"] != "pct reboot 100: exit status 2" {
		t.Errorf("record %v", rec)
	}
	if err := c.FailReboot(ctxT(t), "../x", "m"); !errors.Is(err, nannyapi.ErrInvalidInput) {
		t.Errorf("bad id: %v", err)
	}
}

func TestNoCredentials(t *testing.T) {
	c := newClient(t, "http://127.0.0.1:1", nannyapi.Config{})
	if err := c.IngestMetrics(ctxT(t), sampleMetrics()); !errors.Is(err, nannyapi.ErrNoCredentials) {
		t.Errorf("err %v", err)
	}
}
