package main

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary run main() in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("FAKEAPI_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestCommand starts the command as a separate process, reads the URL it
// prints, calls it, and stops it with SIGTERM.
func TestCommand(t *testing.T) {
	script := filepath.Join(t.TempDir(), "ai.json")
	if err := os.WriteFile(script, []byte(`{"turns":["hello"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-listen", "127.0.0.1:0", "-auto-approve", "-newer", "-ai-script", script)
	cmd.Env = append(os.Environ(), "FAKEAPI_RUN_MAIN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	vars := map[string]string{}
	sc := bufio.NewScanner(out)
	for len(vars) < 4 && sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		vars[k] = v
	}
	if !strings.HasPrefix(vars["FAKEAPI_URL"], "http://127.0.0.1:") || vars["FAKEAPI_USER_TOKEN"] == "" || !strings.HasPrefix(vars["FAKEAPI_STATIC_TOKEN"], "nsk_") {
		t.Fatalf("printed %v", vars)
	}
	resp, err := http.Get(vars["FAKEAPI_URL"] + "/api/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("health %d", resp.StatusCode)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("no exit after SIGTERM")
	}
}

func TestBadFlags(t *testing.T) {
	if err := run([]string{"-ai-script", "/nonexistent/ai.json"}, os.Stdout); err == nil {
		t.Error("missing script accepted")
	}
	if err := run([]string{"-bogus"}, os.Stdout); err == nil {
		t.Error("unknown flag accepted")
	}
}
