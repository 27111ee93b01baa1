package fakeapi

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadScriptedAI(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ai.json")
	script := `{"turns":[{"response_type":"diagnostic","reasoning":"r","commands":[],"ebpf_programs":[]},"plain text"],
	           "investigations":{"inv1":["only"]}}`
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	ai, err := LoadScriptedAI(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		inv, want string
		wantErr   bool
	}{
		{"x", `{"response_type":"diagnostic","reasoning":"r","commands":[],"ebpf_programs":[]}`, false},
		{"x", "plain text", false},
		{"x", "", true},
		{"y", `{"response_type":"diagnostic","reasoning":"r","commands":[],"ebpf_programs":[]}`, false},
		{"inv1", "only", false},
		{"inv1", "", true},
	} {
		got, err := ai.Turn(ctx, AITurn{InvestigationID: tc.inv})
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.inv, got, err, tc.want)
		}
	}
	if err := os.WriteFile(path, []byte(`{"turn":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadScriptedAI(path); err == nil {
		t.Error("unknown key accepted")
	}
}

func TestFaultsAndHits(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.Fail(RouteHealth, 503, 2, "<html>busy</html>")
	for i, want := range []int{503, 503, 200} {
		if code, _ := send(t, s, rawReq{method: "GET", path: "/api/health"}); code != want {
			t.Errorf("request %d: %d, want %d", i, code, want)
		}
	}
	if s.Hits(RouteHealth) != 3 {
		t.Errorf("hits %d", s.Hits(RouteHealth))
	}
	s.Fail(RouteDeviceAuthStart, 502, 0, "")
	for range 3 {
		if code, _ := send(t, s, agentPost(`{"action":"device-auth-start"}`, "")); code != 502 {
			t.Errorf("until cleared: %d", code)
		}
	}
	s.ClearFaults()
	if code, _ := send(t, s, agentPost(`{"action":"device-auth-start"}`, "")); code != 200 {
		t.Errorf("after clear: %d", code)
	}
	if s.Hits(RouteDeviceAuthStart) != 4 {
		t.Errorf("hits %d", s.Hits(RouteDeviceAuthStart))
	}
}
