package nannyapi_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// recorder is a second loopback server that records every request and
// any Authorization header it gets.
type recorder struct {
	*httptest.Server
	mu    sync.Mutex
	auths []string
	hits  int
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.hits++
		if a := req.Header.Get("Authorization"); a != "" {
			r.auths = append(r.auths, a)
		}
		r.mu.Unlock()
		_, _ = w.Write([]byte("#!/bin/sh\necho pwned\n"))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) seen() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits, append([]string(nil), r.auths...)
}

// TestTokenNeverSentToForeignHost: a record's absolute script_url on
// another host is refused and never fetched, so the token cannot leak.
func TestTokenNeverSentToForeignHost(t *testing.T) {
	s := newFake(t, fakeapi.Options{})
	foreign := newRecorder(t)
	ag := s.AddAgent("", "a", "debian")
	scriptID, _ := s.AddScript("debian", "apt-update.sh", []byte("#!/bin/sh\n"))
	path, _, _ := s.Script(scriptID)
	opID, err := s.CreatePatch(ag.ID, fakeapi.PatchSpec{Mode: "dry-run", ScriptID: scriptID, ScriptURL: foreign.URL + path})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s.URL(), nannyapi.Config{}).WithCredentials(&bearer{token: ag.AccessToken})
	ctx := ctxT(t)
	ops, err := c.ListPatchOperations(ctx, nannyapi.RecordQuery{Status: "pending"})
	if err != nil || len(ops) != 1 || ops[0].ID != opID {
		t.Fatalf("ops %+v %v", ops, err)
	}
	for _, u := range []string{
		ops[0].ScriptURL,
		strings.Replace(ops[0].ScriptURL, "http://", "//", 1),
		strings.Replace(ops[0].ScriptURL, "http://", "http://user:pw@", 1),
		strings.Replace(s.URL()+path, "http://", "https://", 1), // same host, other scheme = other origin
	} {
		if _, err := c.DownloadScript(ctx, u); !errors.Is(err, nannyapi.ErrForeignOrigin) {
			t.Errorf("%s: %v, want ErrForeignOrigin", u, err)
		}
	}
	for _, u := range []string{"/api/collections/patch_operations/records", "/api/files/../agent/x/y", "api/files/a/b/c", "/api/files/a/b"} {
		if _, err := c.DownloadScript(ctx, u); !errors.Is(err, nannyapi.ErrBadURL) {
			t.Errorf("%s: %v, want ErrBadURL", u, err)
		}
	}
	if hits, auths := foreign.seen(); hits != 0 || len(auths) != 0 {
		t.Errorf("foreign host got %d requests, authorization %v", hits, auths)
	}
	// The same-origin absolute form is fine.
	if _, err := c.DownloadScript(ctx, s.URL()+path); err != nil {
		t.Errorf("same origin absolute: %v", err)
	}
}

// TestRedirectToForeignHostRefused: an API answer redirecting elsewhere is
// not followed (the token and body stay home).
func TestRedirectToForeignHostRefused(t *testing.T) {
	foreign := newRecorder(t)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, foreign.URL+r.URL.Path, http.StatusFound)
	}))
	defer api.Close()
	c := newClient(t, api.URL, nannyapi.Config{}).WithCredentials(&bearer{token: "secret-agent-token"})
	_, err := c.DownloadScript(ctxT(t), "/api/files/pbc_1280174292/nl52d78j6pgcswd/apt.sh")
	if !errors.Is(err, nannyapi.ErrForeignOrigin) {
		t.Errorf("redirect: %v", err)
	}
	if hits, _ := foreign.seen(); hits != 0 {
		t.Errorf("foreign host got %d requests", hits)
	}
}
