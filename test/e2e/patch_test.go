package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
)

// Patch runs end to end: the fake NannyAPI, the worker as daemon, the
// broker as root, the stand-in apt-update.sh run by /bin/bash from a
// sealed memfd, finding the fake apt-get through the policy's PATH. No
// test runs the host's package manager.

// patchPoll makes the worker check runs often.
var patchPoll = []string{"--patch-poll-interval", "100ms"}

// aptBin is a root-owned directory holding the fake apt-get.
type aptBin struct{ dir string }

func newAptBin(t *testing.T) aptBin {
	t.Helper()
	requireRoot(t)
	dir, err := stack.WorldReadableTempDir("nannyagent-aptbin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := aptBin{dir: dir}
	b.write(t, "apt-get", string(fakeapi.FakeAptGet()), 0o755)
	b.write(t, "upgradable", "openssl 3.0.11-1~deb12u1 3.0.11-1~deb12u2\nlinux-image-amd64 6.1.55-1 6.1.64-1\nlibc6 2.36-9 2.36-9+deb12u3\n", 0o644)
	return b
}

func (b aptBin) write(t *testing.T, name, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(b.dir, name), []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func (b aptBin) remove(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(b.dir, name)); err != nil {
		t.Fatal(err)
	}
}

// calls is the fake apt-get's log: one "pid args" line per call.
func (b aptBin) calls() string {
	data, _ := os.ReadFile(filepath.Join(b.dir, "calls.log"))
	return string(data)
}

// b64 is how protojson spells bytes.
func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func sum(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

// patchPolicy enables patches, pins the stand-in (or the given sums) and
// puts the fake apt-get first on the run's PATH.
func patchPolicy(bin aptBin, extra string, pins ...string) string {
	if len(pins) == 0 {
		pins = []string{sum(fakeapi.StandInAptUpdate())}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\ncommands:\n  - {id: uptime, program: /usr/bin/uptime}\npatches:\n  enabled: true\n  modes: [dry-run, apply]\n  path: %s:/usr/sbin:/usr/bin:/sbin:/bin\n  pinned:\n", bin.dir)
	for i, p := range pins {
		fmt.Fprintf(&b, "    - {id: pin%d, sha256: %s, name: apt-update.sh}\n", i, p)
	}
	return b.String() + extra
}

// waitPatch waits until the operation's record is completed or failed.
func waitPatch(t *testing.T, s *stack.Stack, srv *fakeapi.Server, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		if rec, ok := srv.Record("patch_operations", id); ok && (rec["status"] == "completed" || rec["status"] == "failed") {
			// The error_msg PATCH follows the result upload.
			if rec["status"] == "failed" && rec["error_msg"] == "" {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			return rec
		}
		time.Sleep(20 * time.Millisecond)
	}
	rec, _ := srv.Record("patch_operations", id)
	t.Fatalf("patch %s did not end: %v\nworker:\n%s\nbroker:\n%s", id, rec, s.WorkerProcess().Log(), s.BrokerProcess().Log())
	return nil
}

func resultsFor(srv *fakeapi.Server, id string) []fakeapi.PatchResultPost {
	var out []fakeapi.PatchResultPost
	for _, r := range srv.PatchResults() {
		if r.OperationID == id {
			out = append(out, r)
		}
	}
	return out
}

// oneResult is the single upload for id.
func oneResult(t *testing.T, srv *fakeapi.Server, id string) fakeapi.PatchResultPost {
	t.Helper()
	rs := resultsFor(srv, id)
	if len(rs) != 1 {
		t.Fatalf("%d result uploads for %s, want exactly 1", len(rs), id)
	}
	return rs[0]
}

// brokerRecord reads the broker's record of a run.
func brokerRecord(t *testing.T, s *stack.Stack, id string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.BrokerStateDir, "patches", id, "record.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func noBrokerRecord(t *testing.T, s *stack.Stack, id string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(s.BrokerStateDir, "patches", id)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the broker has a run of %s: %v", id, err)
	}
}

// routeOrder lists the patch-related requests the fake saw, in order.
func routeOrder(srv *fakeapi.Server) []string {
	var out []string
	for _, r := range srv.Requests() {
		switch r.Route {
		case fakeapi.RouteScriptValidate, fakeapi.RouteFiles, fakeapi.RoutePatchResult:
			out = append(out, r.Route)
		case fakeapi.RoutePatchStatus:
			var body map[string]any
			_ = json.Unmarshal(r.Body, &body)
			out = append(out, fmt.Sprintf("%s %v", r.Route, body["status"]))
		}
	}
	return out
}

// With a policy that pins the stand-in, a dry run ends completed, exit 0,
// with its output uploaded in the backend's multipart shape.
func TestPatchDryRunCompletes(t *testing.T) {
	bin := newAptBin(t)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, ""), patchPoll...)
	start := time.Now()
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run", Exclusions: []string{"linux-image-amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := waitPatch(t, s, srv, id)
	t.Logf("create to completed: %v (polling every 100ms)", time.Since(start).Round(time.Millisecond))
	if rec["status"] != "completed" || fmt.Sprint(rec["exit_code"]) != "0" || rec["error_msg"] != "" {
		t.Errorf("record %v", rec)
	}
	r := oneResult(t, srv, id)
	if len(r.Fields) != 1 || !slices.Equal(r.Fields["exit_code"], []string{"0"}) || r.StdoutName != "stdout.txt" || r.StderrName != "stderr.txt" ||
		!strings.HasPrefix(r.ContentType, "multipart/form-data; boundary=") {
		t.Errorf("multipart fields %v, files %q %q, content type %q", r.Fields, r.StdoutName, r.StderrName, r.ContentType)
	}
	out := string(r.Stdout)
	for _, want := range []string{
		"apt-update: mode=dry-run exclude=linux-image-amd64\n",
		"apt-update: keeping linux-image-amd64 (excluded)\n",
		"apt-update: would upgrade: openssl libc6\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if calls := bin.calls(); !strings.Contains(calls, " update -q\n") || !strings.Contains(calls, " -s -q upgrade\n") || strings.Contains(calls, "install") {
		t.Errorf("apt-get calls:\n%s", calls)
	}
	// Asked the broker (validate, then the check) before the download;
	// marked running before the download; the result last.
	want := []string{fakeapi.RouteScriptValidate, fakeapi.RoutePatchStatus + " running", fakeapi.RouteFiles, fakeapi.RoutePatchResult}
	if got := routeOrder(srv); !slices.Equal(got, want) {
		t.Errorf("requests %q, want %q", got, want)
	}
	br := brokerRecord(t, s, id)
	if got := fmt.Sprint(br["argv"]); got != "[/bin/bash /dev/fd/3 --dry-run --exclude linux-image-amd64]" || br["rule"] != "pin0" || br["state"] != "finished" {
		t.Errorf("broker record argv %s, rule %v, state %v", got, br["rule"], br["state"])
	}
	fi, err := os.Stat(s.BrokerStateDir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("broker state directory %v %v", fi, err)
	}
	log := s.BrokerProcess().Log()
	if !strings.Contains(log, `"check_only"`) || !strings.Contains(log, `"rpc":"RunPatch","decision":"allow","rule":"pin0"`) {
		t.Errorf("decision log lacks the check and the run:\n%s", log)
	}
}

// The defaults refuse every patch, nothing is downloaded and nothing runs;
// the record says why and how to allow it.
func TestPatchDefaultsRefuse(t *testing.T) {
	requireRoot(t)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, realtimePolicy, patchPoll...)
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run"})
	if err != nil {
		t.Fatal(err)
	}
	rec := waitPatch(t, s, srv, id)
	msg, _ := rec["error_msg"].(string)
	standIn := sum(fakeapi.StandInAptUpdate())
	for _, want := range []string{"disabled by this host's policy", "/etc/nannyagent/policy.d/", "patches:\n  enabled: true\n  pinned:\n    - {id: apt-update-" + standIn[:12] + ", sha256: " + standIn} {
		if !strings.Contains(msg, want) {
			t.Errorf("error_msg lacks %q: %q", want, msg)
		}
	}
	r := oneResult(t, srv, id)
	if r.Fields["exit_code"][0] != "1" || !strings.Contains(string(r.Stderr), "disabled by this host's policy") || len(r.Stdout) != 0 {
		t.Errorf("result %+v stderr %q", r.Fields, r.Stderr)
	}
	if n := srv.Hits(fakeapi.RouteFiles); n != 0 {
		t.Errorf("the script was downloaded %d times", n)
	}
	noBrokerRecord(t, s, id)
}

// pinned refuses an unlisted script whose backend hash matches, before
// downloading it, and names the exact line to add.
func TestPatchPinnedRefusesUnlisted(t *testing.T) {
	bin := newAptBin(t)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, "", sum([]byte("#!/bin/sh\necho another script\n"))), patchPoll...)
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run"})
	if err != nil {
		t.Fatal(err)
	}
	rec := waitPatch(t, s, srv, id)
	standIn := sum(fakeapi.StandInAptUpdate())
	line := "    - {id: apt-update-" + standIn[:12] + ", sha256: " + standIn + `, name: "apt-update.sh"}`
	if msg, _ := rec["error_msg"].(string); rec["status"] != "failed" || !strings.Contains(msg, "is not pinned") || !strings.Contains(msg, "\n"+line) {
		t.Errorf("record %v, want the line %q", rec, line)
	}
	if n := srv.Hits(fakeapi.RouteFiles); n != 0 {
		t.Errorf("the unlisted script was downloaded %d times", n)
	}
	if calls := bin.calls(); calls != "" {
		t.Errorf("apt-get ran:\n%s", calls)
	}
	noBrokerRecord(t, s, id)
}

// A download that does not match the backend's hash runs nothing; and
// bytes that do not match the hash handed to the broker (as a compromised
// worker would send) are refused by the broker itself.
func TestPatchHashMismatchRunsNothing(t *testing.T) {
	bin := newAptBin(t)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, ""), patchPoll...)
	evil := "#!/bin/bash\napt-get install -y backdoor\n"
	scriptID, _ := srv.AddScript("debian", "apt-update.sh", fakeapi.StandInAptUpdate())
	srv.TamperScript(scriptID, []byte(evil))
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run", ScriptID: scriptID})
	if err != nil {
		t.Fatal(err)
	}
	rec := waitPatch(t, s, srv, id)
	if msg, _ := rec["error_msg"].(string); !strings.Contains(msg, "does not match its sha256") || !strings.Contains(msg, sum([]byte(evil))) || !strings.Contains(msg, "nothing ran") {
		t.Errorf("record %v", rec)
	}
	if calls := bin.calls(); calls != "" {
		t.Errorf("apt-get ran:\n%s", calls)
	}
	noBrokerRecord(t, s, id)

	// Straight to the broker as the worker's account: the pinned hash
	// with other bytes.
	req := fmt.Sprintf(`{"operationId":"forged1","script":%q,"sha256":%q,"mode":"PATCH_MODE_DRY_RUN"}`,
		b64(evil), sum(fakeapi.StandInAptUpdate()))
	res := s.Run(ctxT(t), s.WorkerCred(), stack.BrokerProbe, "--socket", s.BrokerSocket, "--call", "RunPatch", "--request", req)
	if res.Code != 0 || !strings.Contains(res.Stdout, `"PATCH_STATE_REFUSED"`) || !strings.Contains(res.Stdout, "nothing ran") {
		t.Errorf("forged bytes: exit %d %s %s", res.Code, res.Stdout, res.Stderr)
	}
	noBrokerRecord(t, s, "forged1")
}

// waitCaughtUp waits until the worker's first catch-up of every kind is
// done (status --json shows realtime.lastCatchUp). An apply created before
// it is, rightly, found in a fresh install's backlog and not run.
func waitCaughtUp(t *testing.T, s *stack.Stack) {
	t.Helper()
	var res stack.Result
	for deadline := time.Now().Add(9 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		res = s.CLI(ctxT(t), nil, "status", "--json")
		var st struct{ Realtime struct{ LastCatchUp string } }
		if json.Unmarshal([]byte(res.Stdout), &st) == nil && st.Realtime.LastCatchUp != "" {
			return
		}
	}
	t.Fatalf("the worker never caught up: %s %s", res.Stdout, res.Stderr)
}

// Apply: no --dry-run, exclusions as --exclude a,b, and a child that reads
// stdin (a dpkg prompt) gets /dev/null, not the rest of the script.
func TestPatchApplyArgsAndStdin(t *testing.T) {
	bin := newAptBin(t)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, ""), patchPoll...)
	waitCaughtUp(t, s)
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "apply", Exclusions: []string{"linux-image-amd64", "libc6"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := waitPatch(t, s, srv, id)
	if rec["status"] != "completed" {
		t.Fatalf("record %v\n%s", rec, s.WorkerProcess().Log())
	}
	out := string(oneResult(t, srv, id).Stdout)
	for _, want := range []string{"apt-update: mode=apply exclude=linux-image-amd64,libc6\n", "Setting up openssl ...\n",
		"apt-update: upgraded: openssl\n"} { // the script's last line: not eaten by the prompt
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if calls := bin.calls(); !strings.Contains(calls, " install -y -q --only-upgrade openssl\n") || !strings.Contains(calls, "stdin held []\n") {
		t.Errorf("apt-get calls:\n%s", calls)
	}
	if got := fmt.Sprint(brokerRecord(t, s, id)["argv"]); got != "[/bin/bash /dev/fd/3 --exclude linux-image-amd64,libc6]" {
		t.Errorf("argv %s", got)
	}
}

// The script cannot change the bytes it runs from: writes to its sealed
// memfd fail, even as root.
func TestPatchScriptIsSealed(t *testing.T) {
	bin := newAptBin(t)
	selfEdit := "#!/bin/bash\n" +
		"if printf 'reboot\\n' >> \"$0\" 2>/dev/null; then echo 'script changed'; else echo 'append refused'; fi\n" +
		"if : > \"$0\" 2>/dev/null; then echo 'script truncated'; else echo 'truncate refused'; fi\n" +
		"echo \"runs from $0\"\n"
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, "", sum([]byte(selfEdit))), patchPoll...)
	scriptID, _ := srv.AddScript("debian", "self-edit.sh", []byte(selfEdit))
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run", ScriptID: scriptID})
	if err != nil {
		t.Fatal(err)
	}
	waitPatch(t, s, srv, id)
	if out := string(oneResult(t, srv, id).Stdout); out != "append refused\ntruncate refused\nruns from /dev/fd/3\n" {
		t.Errorf("stdout %q", out)
	}
}

// A timeout kills the whole run, a child in its own session included.
func TestPatchTimeoutKillsTheRun(t *testing.T) {
	bin := newAptBin(t)
	const marker = "7733"
	bin.write(t, "hold", "", 0o644)
	bin.write(t, "spawn", marker, 0o644)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, "limits: {patch_max_runtime: 2s}\n"), patchPoll...)
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run"})
	if err != nil {
		t.Fatal(err)
	}
	rec := waitPatch(t, s, srv, id)
	msg, _ := rec["error_msg"].(string)
	if rec["status"] != "failed" || !strings.Contains(msg, "stopped after 2s") || !strings.Contains(msg, "patch_max_runtime") {
		t.Errorf("record %v", rec)
	}
	if r := oneResult(t, srv, id); r.Fields["exit_code"][0] != "-1" || !strings.Contains(string(r.Stderr), "stopped after 2s") {
		t.Errorf("result %v stderr %q", r.Fields, r.Stderr)
	}
	if !strings.Contains(bin.calls(), "update -q") {
		t.Fatalf("the run never reached apt-get:\n%s", bin.calls())
	}
	for _, argv := range [][]string{{"sleep", marker}, {"/bin/sh", filepath.Join(bin.dir, "apt-get"), "-s", "-q", "upgrade"}} {
		if pids := procsWithArgv(argv...); len(pids) > 0 {
			t.Errorf("%q survived the timeout: pids %v", argv, pids)
		}
	}
}

// procsWithArgv lists live processes whose argv is exactly argv.
func procsWithArgv(argv ...string) []int {
	want := strings.Join(argv, "\x00") + "\x00"
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && string(b) == want {
			out = append(out, pid)
		}
	}
	return out
}

// Two patches run one after the other; the broker itself refuses a
// second run while one goes, whoever asks.
func TestPatchesRunOneAfterAnother(t *testing.T) {
	bin := newAptBin(t)
	bin.write(t, "hold", "", 0o644)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, ""), patchPoll...)
	first, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run"})
	if err != nil {
		t.Fatal(err)
	}
	waitCalls(t, bin, "-s -q upgrade", 1)
	standIn := fakeapi.StandInAptUpdate()
	req := fmt.Sprintf(`{"operationId":"third1","script":%q,"sha256":%q,"mode":"PATCH_MODE_DRY_RUN"}`, b64(string(standIn)), sum(standIn))
	res := s.Run(ctxT(t), s.WorkerCred(), stack.BrokerProbe, "--socket", s.BrokerSocket, "--call", "RunPatch", "--request", req)
	if res.Code != 0 || !strings.Contains(res.Stdout, `"PATCH_STATE_BUSY"`) {
		t.Errorf("a run while another goes: exit %d %s %s", res.Code, res.Stdout, res.Stderr)
	}
	bin.remove(t, "hold")
	for _, id := range []string{first, second} {
		if rec := waitPatch(t, s, srv, id); rec["status"] != "completed" {
			t.Errorf("%s: %v", id, rec)
		}
		oneResult(t, srv, id)
	}
	a, b := brokerRecord(t, s, first), brokerRecord(t, s, second)
	if a["started_at"].(string) > b["started_at"].(string) {
		a, b = b, a
	}
	aEnd, _ := time.Parse(time.RFC3339Nano, a["finished_at"].(string))
	bStart, _ := time.Parse(time.RFC3339Nano, b["started_at"].(string))
	if bStart.Before(aEnd) {
		t.Errorf("runs overlap: %s started at %v, before %s finished at %v", b["operation_id"], bStart, a["operation_id"], aEnd)
	}
}

func waitCalls(t *testing.T, bin aptBin, call string, n int) {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Count(bin.calls(), " "+call+"\n") >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("apt-get %q not called %d times:\n%s", call, n, bin.calls())
}

// kill -9 of the worker mid-run: the run goes on in the broker, and the
// next worker uploads its result, once.
func TestPatchWorkerKilledMidRun(t *testing.T) {
	bin := newAptBin(t)
	bin.write(t, "hold", "", 0o644)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, ""), patchPoll...)
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run"})
	if err != nil {
		t.Fatal(err)
	}
	waitCalls(t, bin, "-s -q upgrade", 1)
	s.KillWorker()
	bin.remove(t, "hold")
	deadline := time.Now().Add(9 * time.Second)
	for brokerRecord(t, s, id)["state"] == "running" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := brokerRecord(t, s, id)["state"]; st != "finished" {
		t.Fatalf("the run did not finish without the worker: %v", st)
	}
	if n := len(resultsFor(srv, id)); n != 0 {
		t.Fatalf("%d uploads before the restart", n)
	}
	if err := s.StartWorker(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rec := waitPatch(t, s, srv, id)
	if rec["status"] != "completed" {
		t.Errorf("record %v", rec)
	}
	time.Sleep(500 * time.Millisecond) // room for a duplicate upload to show
	r := oneResult(t, srv, id)
	if !strings.Contains(string(r.Stdout), "apt-update: would upgrade: openssl linux-image-amd64 libc6\n") {
		t.Errorf("uploaded stdout %q", r.Stdout)
	}
	if n := strings.Count(bin.calls(), " update -q\n"); n != 1 {
		t.Errorf("the script ran %d times", n)
	}
}
