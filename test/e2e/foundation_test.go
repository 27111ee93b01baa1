package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nannyai/nannyagent/test/stack"
)

// decisionLines returns the broker's decision log entries.
func decisionLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "decision" {
			out = append(out, m)
		}
	}
	return out
}

func expectedPolicySHA(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	file := sha256.Sum256(data)
	merged := sha256.Sum256([]byte(fmt.Sprintf("vendor %s\n", hex.EncodeToString(file[:]))))
	return hex.EncodeToString(merged[:])
}

func TestStatusReportsTheProbe(t *testing.T) {
	s := startStack(t, stack.Options{})
	res := s.CLI(ctxT(t), nil, "status")
	if !statusAnswered(res) {
		t.Fatalf("status exit %d: %s%s", res.Code, res.Stdout, res.Stderr)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"worker:        running",
		"broker:        reachable",
		"kernel:        " + unix.ByteSliceToString(u.Release[:]),
		"probe kinds:",
		"policy:        sha256 " + expectedPolicySHA(t, s.PolicyFile),
	}
	for _, w := range want {
		if !strings.Contains(res.Stdout, w) {
			t.Errorf("status lacks %q:\n%s", w, res.Stdout)
		}
	}

	js := s.CLI(ctxT(t), nil, "status", "--json")
	var st struct {
		Broker struct {
			Reachable bool
			Probe     struct {
				KernelRelease string
				ProbeKinds    struct {
					Tracepoint, Kprobe, Kfunc struct {
						Available bool
						Evidence  string
					}
				}
				Bpftrace struct{ Found bool }
			}
		}
	}
	if err := json.Unmarshal([]byte(js.Stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, js.Stdout)
	}
	kinds := st.Broker.Probe.ProbeKinds
	if !st.Broker.Reachable || kinds.Tracepoint.Evidence == "" || kinds.Kprobe.Evidence == "" {
		t.Errorf("probe incomplete: %+v", st.Broker)
	}
	if _, err := os.Stat("/sys/kernel/tracing/events"); err == nil && !kinds.Tracepoint.Available {
		t.Errorf("tracefs events exist but tracepoints reported unavailable: %s", kinds.Tracepoint.Evidence)
	}
	if _, err := os.Stat("/sys/kernel/tracing/kprobe_events"); err != nil && kinds.Kprobe.Available {
		t.Errorf("kprobe_events is absent but kprobes reported available")
	}
}

func TestBrokerServesOnlyRootAndTheWorker(t *testing.T) {
	requireRoot(t)
	s := startStack(t, stack.Options{})
	probe := func(c *syscall.Credential) stack.Result {
		return s.Run(ctxT(t), c, stack.BrokerProbe, "--socket", s.BrokerSocket)
	}
	if res := probe(nil); res.Code != 0 {
		t.Errorf("root refused: %s", res.Stderr)
	}
	if res := probe(cred(t, s.Worker.Name, s.Worker.GID)); res.Code != 0 {
		t.Errorf("worker account refused: %s", res.Stderr)
	}
	// nobody carries the worker's group, so the socket's file mode lets it
	// connect: only the SO_PEERCRED check in the handshake stands between it
	// and the broker.
	stranger := cred(t, "nobody", s.Worker.GID)
	if res := probe(stranger); res.Code == 0 {
		t.Fatalf("nobody was served by the broker: %s", res.Stdout)
	}
	var found bool
	for _, d := range decisionLines(t, s.BrokerProcess().Log()) {
		if d["rpc"] == "connect" && d["decision"] == "deny" && d["peer_uid"] == float64(stranger.Uid) && d["policy_sha256"] != "" {
			found = true
		}
	}
	if !found {
		t.Errorf("the refusal of uid %d is not in the decision log:\n%s", stranger.Uid, s.BrokerProcess().Log())
	}
}

func TestEveryRequestIsLogged(t *testing.T) {
	s := startStack(t, stack.Options{})
	if res := s.CLI(ctxT(t), nil, "status"); !statusAnswered(res) {
		t.Fatal(res.Stderr)
	}
	var probes int
	for _, d := range decisionLines(t, s.BrokerProcess().Log()) {
		if d["rpc"] != "Probe" {
			continue
		}
		probes++
		for _, key := range []string{"peer_uid", "decision", "rule", "policy_sha256", "duration_ms"} {
			if _, ok := d[key]; !ok {
				t.Errorf("decision line lacks %s: %v", key, d)
			}
		}
		if d["peer_uid"] != float64(s.Worker.UID) {
			t.Errorf("Probe came from uid %v, want the worker's %d", d["peer_uid"], s.Worker.UID)
		}
	}
	if probes == 0 {
		t.Errorf("no Probe decision logged:\n%s", s.BrokerProcess().Log())
	}
}

func TestWorkerSocketServesRootAndAdmins(t *testing.T) {
	requireRoot(t)
	s := startStack(t, stack.Options{})
	ctx := ctxT(t)

	// A member of the admin group through a supplementary group only.
	admin := cred(t, "bin", s.AdminGID)
	if res := s.CLI(ctx, admin, "status"); !statusAnswered(res) || !strings.Contains(res.Stdout, "broker:        reachable") {
		t.Errorf("admin-group member not served (exit %d): %s%s", res.Code, res.Stdout, res.Stderr)
	}
	res := s.CLI(ctx, admin, "register")
	if res.Code == 0 || !strings.Contains(res.Stderr, "only root may register") {
		t.Errorf("admin-group member could register (exit %d): %s%s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(s.WorkerProcess().Log(), `"refused registration"`) {
		t.Errorf("worker did not log the refused registration")
	}

	// The worker's own account passes the socket's file mode (it owns it)
	// but is not an admin: the handshake refuses it.
	nonAdmin := cred(t, s.Worker.Name, s.Worker.GID)
	res = s.CLI(ctx, nonAdmin, "status")
	if res.Code == 0 || !strings.Contains(res.Stderr, "refused this connection") {
		t.Errorf("non-admin uid served or unclear error (exit %d): %s", res.Code, res.Stderr)
	}
	if !strings.Contains(s.WorkerProcess().Log(), `"refused CLI connection"`) {
		t.Errorf("worker did not log the refused connection")
	}

	// Without the group the file mode already stops nobody: one sentence.
	res = s.CLI(ctx, cred(t, "nobody"), "status")
	if res.Code != 1 || !strings.Contains(res.Stderr, "permission denied on "+s.WorkerSocket) || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
		t.Errorf("nobody: want one clear sentence, got exit %d: %q", res.Code, res.Stderr)
	}
}

func TestCLIWithoutWorkerSaysSo(t *testing.T) {
	dir := t.TempDir()
	res := (&stack.Stack{BinDir: binDir, WorkerSocket: filepath.Join(dir, "worker.sock")}).CLI(ctxT(t), nil, "status")
	if res.Code != 1 || !strings.Contains(res.Stderr, "the worker is not running") || strings.Contains(res.Stderr, "rpc error") {
		t.Errorf("want one clear sentence, got exit %d: %q", res.Code, res.Stderr)
	}
}

func TestWorkerIsNotDumpable(t *testing.T) {
	requireRoot(t)
	s := startStack(t, stack.Options{})
	var st syscall.Stat_t
	// A non-dumpable process's /proc entries belong to root.
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/status", s.WorkerProcess().Pid()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 {
		t.Errorf("/proc/<worker>/status owned by uid %d: the worker is dumpable", st.Uid)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.WorkerProcess().Pid()))
	if !strings.Contains(string(status), fmt.Sprintf("Uid:\t%d", s.Worker.UID)) {
		t.Errorf("worker does not run as %s:\n%s", s.Worker.Name, status)
	}
}

func TestBrokerRefusesToReplaceFiles(t *testing.T) {
	s := startStack(t, stack.Options{})
	ctx := ctxT(t)
	// A second broker on the live socket.
	res := s.Run(ctx, nil, stack.Broker, "--socket", s.BrokerSocket, "--socket-group", "root",
		"--worker-user", s.Worker.Name, "--policy", s.PolicyFile)
	if res.Code != 1 || !strings.Contains(res.Stderr, "a live server already answers") {
		t.Errorf("second broker: exit %d %s", res.Code, res.Stderr)
	}
	// A regular file where the socket should go.
	plain := filepath.Join(s.Dir, "run", "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = s.Run(ctx, nil, stack.Broker, "--socket", plain, "--socket-group", "root",
		"--worker-user", s.Worker.Name, "--policy", s.PolicyFile)
	if res.Code != 1 || !strings.Contains(res.Stderr, "is not a socket") {
		t.Errorf("regular file: exit %d %s", res.Code, res.Stderr)
	}
	if b, _ := os.ReadFile(plain); string(b) != "x" {
		t.Error("the regular file was changed")
	}
}

func TestPolicyReloadOnHangup(t *testing.T) {
	s := startStack(t, stack.Options{})
	ctx := ctxT(t)
	shaOf := func() string {
		res := s.Run(ctx, nil, stack.BrokerProbe, "--socket", s.BrokerSocket)
		var p struct{ Policy struct{ Sha256 string } }
		if err := json.Unmarshal([]byte(res.Stdout), &p); err != nil {
			t.Fatalf("probe: %v %s", err, res.Stderr)
		}
		return p.Policy.Sha256
	}
	before := shaOf()
	if err := os.WriteFile(s.PolicyFile, []byte("version: 1\n# changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hangup := func() {
		if err := syscall.Kill(s.BrokerProcess().Pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	hangup()
	changed := waitFor(t, func() bool { return shaOf() == expectedPolicySHA(t, s.PolicyFile) })
	if !changed || shaOf() == before {
		t.Fatalf("policy not reloaded on SIGHUP")
	}
	good := shaOf()
	if err := os.WriteFile(s.PolicyFile, []byte("version: 1\nunknown_section: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hangup()
	if !waitFor(t, func() bool { return strings.Contains(s.BrokerProcess().Log(), "policy reload failed") }) {
		t.Fatalf("bad reload not logged:\n%s", s.BrokerProcess().Log())
	}
	if got := shaOf(); got != good {
		t.Errorf("a bad file replaced the policy: sha %s, want %s", got, good)
	}
}

func TestBrokerRefusesWritablePolicy(t *testing.T) {
	requireRoot(t)
	dir, err := stack.WorldReadableTempDir("nannyagent-policy-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, tc := range []struct {
		name string
		mode os.FileMode
		uid  int
		want string
	}{
		{"group writable", 0o664, 0, "writable by group or other"},
		{"other writable", 0o646, 0, "writable by group or other"},
		{"not root's", 0o644, 1, "must be owned by root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(p, []byte("version: 1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, tc.uid, 0); err != nil {
				t.Fatal(err)
			}
			res := (&stack.Stack{BinDir: binDir}).Run(ctxT(t), nil, stack.Broker,
				"--socket", filepath.Join(dir, "b.sock"), "--socket-group", "root", "--worker-user", "daemon", "--policy", p)
			if res.Code != 1 || !strings.Contains(res.Stderr, tc.want) {
				t.Errorf("exit %d, want refusal with %q: %s", res.Code, tc.want, res.Stderr)
			}
		})
	}
}

func TestSocketActivationAndIdleExit(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed: " + err.Error())
	}
	dir, err := stack.WorldReadableTempDir("nannyagent-activate-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "broker.sock")
	me, err := stack.LookupIdentity(currentUser(t))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(activate, "-l", sock, filepath.Join(binDir, stack.Broker),
		"--worker-user", me.Name, "--policy", policy, "--policy-dir", filepath.Join(dir, "none"),
		"--idle-exit", "2s", "--socket", filepath.Join(dir, "unused.sock"))
	var logBuf strings.Builder
	cmd.Stderr = &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
	}()
	if !waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil }) {
		t.Fatal("activation socket did not appear")
	}
	res := (&stack.Stack{BinDir: binDir}).Run(ctxT(t), nil, stack.BrokerProbe, "--socket", sock)
	if res.Code != 0 {
		t.Fatalf("probe through the activated socket failed: %s\n%s", res.Stderr, logBuf.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "unused.sock")); err == nil {
		t.Error("an activated broker created its own socket")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("idle exit was not clean: %v\n%s", err, logBuf.String())
		}
		if !strings.Contains(logBuf.String(), "idle, exiting") || !strings.Contains(logBuf.String(), `"socket_activated":true`) {
			t.Errorf("log does not show activation and idle exit:\n%s", logBuf.String())
		}
	case <-time.After(9 * time.Second):
		t.Fatalf("broker did not exit after 2s idle:\n%s", logBuf.String())
	}
}

func TestNotifyReadyAndWatchdog(t *testing.T) {
	dir, err := stack.WorldReadableTempDir("nannyagent-notify-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	notify := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, stack.Broker), "--socket", filepath.Join(dir, "b.sock"),
		"--socket-group", currentGroup(t), "--worker-user", currentUser(t), "--policy", policy)
	cmd.Env = []string{"NOTIFY_SOCKET=" + notify, "WATCHDOG_USEC=200000"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(8 * time.Second)
	for !(got["READY=1"] && got["WATCHDOG=1"]) && time.Now().Before(deadline) {
		_ = conn.SetReadDeadline(deadline)
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			got[line] = true
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitErr := cmd.Wait()
	if !got["READY=1"] || !got["WATCHDOG=1"] {
		t.Errorf("notifications %v, want READY=1 and WATCHDOG=1", got)
	}
	if waitErr != nil {
		t.Errorf("broker did not stop cleanly on SIGTERM: %v", waitErr)
	}
}

func TestWorkerConfigErrorNamesTheKey(t *testing.T) {
	res := (&stack.Stack{BinDir: binDir}).Run(ctxT(t), nil, stack.Worker,
		"--config", "/nonexistent", "--api-url", "https://x.test", "--metrics-interval", "2")
	if res.Code != 1 || !strings.Contains(res.Stderr, "config metrics_interval:") {
		t.Errorf("exit %d, stderr %q", res.Code, res.Stderr)
	}
}

func waitFor(t *testing.T, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}

func currentUser(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Skip("cannot tell the current user's name: " + err.Error())
	}
	return u.Username
}

func currentGroup(t *testing.T) string {
	if os.Geteuid() == 0 {
		return "root"
	}
	return strconv.Itoa(os.Getgid())
}
