package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
)

// TestTokenNeverGoesToAForeignHost plants a patch record whose script_url
// names another host: the worker must not contact it at all, and must say
// why in the result it uploads.
func TestTokenNeverGoesToAForeignHost(t *testing.T) {
	var mu sync.Mutex
	var seen []*http.Request
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		_, _ = w.Write([]byte("#!/bin/sh\necho pwned\n"))
	}))
	defer foreign.Close()
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, realtimePolicy)
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run", ScriptURL: foreign.URL + "/api/files/scripts/abcdefghij12345/evil.sh"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(9 * time.Second)
	var stderr string
	for time.Now().Before(deadline) && stderr == "" {
		for _, r := range srv.PatchResults() {
			if r.OperationID == id {
				stderr = string(r.Stderr)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if stderr == "" {
		t.Fatalf("no result uploaded for the patch\n%s", s.WorkerProcess().Log())
	}
	if !strings.Contains(stderr, "origin") {
		t.Errorf("the result does not say the URL was refused: %q", stderr)
	}
	rec := waitPatch(t, s, srv, id)
	if msg, _ := rec["error_msg"].(string); !strings.Contains(msg, "not on this agent's NannyAPI origin") || !strings.Contains(msg, "not contacted") {
		t.Errorf("error_msg %q", msg)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 0 {
		t.Errorf("the worker contacted the foreign host %d time(s); Authorization: %q", len(seen), seen[0].Header.Get("Authorization"))
	}
}
