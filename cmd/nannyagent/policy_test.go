package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const examplePolicy = "../../policy/testdata/example.yaml"

func runPolicyArgs(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runPolicy(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunPolicyExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nbogus: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"check", examplePolicy}, 0, "policy OK"},
		{[]string{"check", "--strict", examplePolicy}, 0, "policy OK"},
		{[]string{"check", examplePolicy, "../../policy/testdata/policy.d"}, 0, "policy OK: 3 file(s)"},
		{[]string{"check", bad}, 1, "bad.yaml:2:1: policy: unknown key \"bogus\""},
		{[]string{"explain", examplePolicy}, 0, "What this policy lets nannyagent-broker do as root"},
		{[]string{"explain", bad}, 1, ""},
		{[]string{"test", examplePolicy, "--command", "ps aux | head -n 5"}, 0, "decision: ALLOWED"},
		{[]string{"test", "--command=cat /etc/shadow", examplePolicy}, 3, "deny-shadow"},
		{[]string{"test", examplePolicy, "--command", "cat /etc/hosts; id"}, 3, `";" at offset 14`},
		{[]string{"test", bad, "--command", "id"}, 1, ""},
		{[]string{"test", examplePolicy}, 2, ""},
		{[]string{"test", examplePolicy, "--command"}, 2, ""},
		{[]string{"check", "--bogus", examplePolicy}, 2, ""},
		{[]string{"explain", "--strict", examplePolicy}, 2, ""},
		{[]string{"frobnicate"}, 2, ""},
		{[]string{}, 2, ""},
		{[]string{"help"}, 0, "usage:"},
	}
	for _, c := range cases {
		code, out, errOut := runPolicyArgs(t, c.args...)
		if code != c.code {
			t.Errorf("%q: exit %d, want %d\nstdout: %s\nstderr: %s", c.args, code, c.code, out, errOut)
			continue
		}
		if c.out != "" && !strings.Contains(out, c.out) {
			t.Errorf("%q: stdout lacks %q:\n%s", c.args, c.out, out)
		}
	}
}

func TestRunPolicyJSON(t *testing.T) {
	code, out, _ := runPolicyArgs(t, "test", "--json", examplePolicy, "--command", "grep -r x /etc")
	if code != 3 {
		t.Fatalf("exit %d", code)
	}
	var res struct {
		Allowed bool   `json:"allowed"`
		Reason  string `json:"reason"`
		SHA256  string `json:"policy_sha256"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Allowed || !strings.Contains(res.Reason, "recursive") || len(res.SHA256) != 64 {
		t.Errorf("%s: %+v %v", out, res, err)
	}
	code, out, _ = runPolicyArgs(t, "check", "--json", examplePolicy)
	var chk struct {
		Valid bool `json:"valid"`
		Files []struct {
			SHA256 string `json:"sha256"`
		} `json:"files"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &chk) != nil || !chk.Valid || len(chk.Files) != 1 {
		t.Errorf("check --json: %d %s", code, out)
	}
	code, out, _ = runPolicyArgs(t, "explain", "--json", examplePolicy)
	var ex struct {
		SHA256   string            `json:"sha256"`
		Commands []json.RawMessage `json:"commands"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ex) != nil || len(ex.Commands) == 0 {
		t.Errorf("explain --json: %d %s", code, out)
	}
}

func TestRunPolicyStrictOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the file must be chowned to another account")
	}
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte("version: 1\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runPolicyArgs(t, "check", path)
	if code != 0 || !strings.Contains(out, "warning: policy "+path+": mode 0666 is writable by group or other") {
		t.Errorf("working copy: %d %s", code, out)
	}
	code, out, _ = runPolicyArgs(t, "check", "--strict", path)
	if code != 1 || !strings.Contains(out, "error: "+path+": mode 0666 is writable by group or other (the broker refuses it)") {
		t.Errorf("strict: %d %s", code, out)
	}
}
