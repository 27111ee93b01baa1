package policy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckReport(t *testing.T) {
	res := Check(CheckOptions{WorkerAccount: testWorker}, "testdata/example.yaml", "testdata/policy.d/10-site.yaml")
	if !res.Valid || len(res.Errors) != 0 || res.SHA256 == "" || len(res.Files) != 2 {
		t.Fatalf("%+v", res)
	}
	var buf bytes.Buffer
	if err := res.WriteText(&buf); err != nil || !strings.Contains(buf.String(), "policy OK: 2 file(s)") {
		t.Errorf("text: %q %v", buf.String(), err)
	}
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", "version: 1\ncommands:\n  - id: x\n    program: x\n")
	res = Check(CheckOptions{}, bad)
	if res.Valid || len(res.Errors) != 1 || res.Errors[0].Line != 4 {
		t.Fatalf("%+v", res)
	}
	buf.Reset()
	if err := WriteJSON(&buf, res); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Valid  bool `json:"valid"`
		Errors []struct {
			File string `json:"file"`
			Line int    `json:"line"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back.Valid || back.Errors[0].Line != 4 || back.Errors[0].File != bad {
		t.Errorf("json %s: %+v %v", buf.String(), back, err)
	}
}

func TestCheckOwnershipWarningOrError(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the file must be chowned to another account")
	}
	path := writeFile(t, t.TempDir(), "p.yaml", "version: 1\n")
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	res := Check(CheckOptions{}, path)
	if !res.Valid || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "must be owned by root") {
		t.Errorf("working copy: %+v", res)
	}
	res = Check(CheckOptions{Strict: true}, path)
	if res.Valid || len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Msg, "the broker refuses it") {
		t.Errorf("strict: %+v", res)
	}
}

// TestExplainWarnings: every dangerous opt-in is a WARNING in plain words.
func TestExplainWarnings(t *testing.T) {
	quiet := loadExample(t).Explain()
	if len(quiet.Warnings) != 0 {
		t.Errorf("the example policy opts into nothing dangerous, got %q", quiet.Warnings)
	}
	dir := t.TempDir()
	local := writeFile(t, dir, "50-danger.yaml", `version: 1
disable: [deny-shadow]
traces: {allow_raw_programs: true}
patches: {enabled: true, mode: trust_backend}
reboots: {enabled: true, host: true, containers: ["*"]}
commands:
  - id: cat-all
    program: /usr/bin/cat
    operands: [{type: path, roots: [/], open: fd}]
`)
	p, err := Load(LoadOptions{WorkerAccount: testWorker}, "testdata/example.yaml", local)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.Explain().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"WARNING: raw bpftrace programs are allowed (set at " + local + ":3): a program written by the model, or by anyone who takes over the worker, can read any file and kernel memory as root",
		"WARNING: patches run in trust_backend mode (set at " + local + ":4): the NannyAPI backend, and anyone who takes over the worker, can run any script as root on this host and in its containers",
		"WARNING: reboots are enabled",
		"reboot this host and containers *",
		"WARNING: deny_paths rule deny-shadow (defined at testdata/example.yaml:",
		"WARNING: rule cat-all",
		"Merged policy sha256: " + p.SHA256(),
		"sha256 " + p.Files()[1].SHA256,
		"Disabled rules:\n  deny-shadow (deny_paths, defined at testdata/example.yaml:",
		"raw programs: ALLOWED",
		"ANY script the backend sends runs as root",
		"/usr/bin/cat  [rule cat, testdata/example.yaml:",
		"refused -r, -R, --recursive",
		"GET /nodes/{local}/lxc/{vmid}/config",
		"command_timeout       10s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q", want)
		}
	}
	buf.Reset()
	if err := WriteJSON(&buf, p.Explain()); err != nil {
		t.Fatal(err)
	}
	var back Explanation
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.SHA256 != p.SHA256() || len(back.Warnings) != 5 || len(back.Commands) != p.RuleCounts()["commands"] || !back.Traces.AllowRawPrograms {
		t.Errorf("json explanation: sha %s warnings %d commands %d", back.SHA256, len(back.Warnings), len(back.Commands))
	}
}

func TestTestReport(t *testing.T) {
	p := loadExample(t)
	res := p.Test("ps aux | grep nginx")
	if !res.Allowed || res.Decision == nil || len(res.Stages) != 2 {
		t.Fatalf("%+v", res)
	}
	var buf bytes.Buffer
	if err := res.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"stage 1: ps aux", "allowed by rule ps: runs /usr/bin/ps aux as root", "decision: ALLOWED"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, buf.String())
		}
	}
	res = p.Test("cat /etc/hosts; id")
	if res.Allowed || res.Syntax == nil || res.Syntax.Offset != 14 || res.Decision != nil {
		t.Fatalf("%+v", res)
	}
	buf.Reset()
	_ = res.WriteText(&buf)
	if !strings.Contains(buf.String(), "decision: DENIED: \";\" at offset 14") || !strings.Contains(buf.String(), "              ^") {
		t.Errorf("syntax denial text:\n%s", buf.String())
	}
	res = p.Test("cat /var/log/syslog")
	buf.Reset()
	_ = res.WriteText(&buf)
	if !strings.Contains(buf.String(), "path operand /var/log/syslog (argument 1, open: fd") {
		t.Errorf("path operand line missing:\n%s", buf.String())
	}
	buf.Reset()
	if err := WriteJSON(&buf, p.Test("grep -r x /etc")); err != nil {
		t.Fatal(err)
	}
	var back TestResult
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back.Allowed || !strings.Contains(back.Reason, "recursive") {
		t.Errorf("json: %s %v", buf.String(), err)
	}
}

// TestExplainShowsEveryLimit: explain lists every limit (the patch
// limits too, now that patch runs enforce them) and says when
// request_bytes applies.
func TestExplainShowsEveryLimit(t *testing.T) {
	e := mustLoadYAML(t, "version: 1\nlimits: {patch_max_runtime: 1h, request_bytes: 8MiB}\n").Explain()
	keys := map[string]LimitExplanation{}
	for _, l := range e.Limits {
		keys[l.Key] = l
	}
	rb := keys["request_bytes"]
	if rb.Value != "8MiB" || !strings.Contains(rb.Meaning, "applies at start-up") {
		t.Errorf("request_bytes: %+v", rb)
	}
	if pr := keys["patch_max_runtime"]; pr.Value != "1h0m0s" || !strings.Contains(pr.Source, ":") {
		t.Errorf("patch_max_runtime: %+v", pr)
	}
	for _, k := range []string{"patch_output_bytes", "patch_child_memory", "patch_child_tasks"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("explain leaves out %s", k)
		}
	}
	if len(keys) != len(limitFields) {
		t.Errorf("explain shows %d limits of %d", len(keys), len(limitFields))
	}
}

// TestRequestBytesMustHoldAPatchScript: a policy whose request_bytes
// cannot carry a patch script of patch_script_bytes is refused, naming
// both limits and the file and line that set the later of them; the
// defaults and the hard caps fit.
func TestRequestBytesMustHoldAPatchScript(t *testing.T) {
	for _, y := range []string{
		"version: 1\n",
		"version: 1\nlimits: {request_bytes: 32MiB, patch_script_bytes: 16MiB}\n",
		"version: 1\nlimits: {request_bytes: 1088KiB}\n",
	} {
		mustLoadYAML(t, y)
	}
	dir := t.TempDir()
	vendor := filepath.Join(dir, "vendor.yaml")
	local := filepath.Join(dir, "local.yaml")
	if err := os.WriteFile(vendor, []byte("version: 1\nlimits:\n  request_bytes: 2MiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(local, []byte("version: 1\nlimits:\n  patch_script_bytes: 2MiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(LoadOptions{}, vendor, local)
	if err == nil {
		t.Fatal("request_bytes below patch_script_bytes loaded")
	}
	for _, want := range []string{local + ":3:", "request_bytes (2MiB)", "patch_script_bytes (2MiB)", "plus 64KiB", "raise request_bytes or lower patch_script_bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := Load(LoadOptions{}, vendor); err != nil {
		t.Errorf("2MiB requests with 1MiB scripts: %v", err)
	}
}
