package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nannyai/nannyagent/ipc/lastserved"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
	"github.com/nannyai/nannyagent/test/repo"
	"github.com/nannyai/nannyagent/test/stack"
)

// This machine is a VM guest: AF_VSOCK binds, there is no loopback
// transport, and a connect to CID 2 reaches a real host. These tests bind
// vsock ports and never dial one.

var pinLine = regexp.MustCompile(`(?m)^sha256:[0-9a-f]{64}$`)

// keygen runs `nannyagent-broker keygen` and returns the printed pin.
func keygen(t *testing.T, base string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, stack.Broker), "keygen", "--out", base).CombinedOutput()
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	pin := pinLine.FindString(string(out))
	if pin == "" {
		t.Fatalf("keygen printed no pin:\n%s", out)
	}
	pinOut, err := exec.Command(filepath.Join(binDir, stack.Broker), "pin", base+".pub").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(pinOut), pin+"  ") {
		t.Fatalf("pin of the public half: %v %q, want %s", err, pinOut, pin)
	}
	return pin
}

// freeVsockPort asks the kernel for a free vsock port. Another process
// could take it before the test binds it again; the test then fails loudly
// rather than flakes silently.
func freeVsockPort(t *testing.T) uint32 {
	t.Helper()
	ln, err := vsocknet.Listen(0)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skip("AF_VSOCK is not available on this kernel")
	}
	if err != nil {
		t.Fatal(err)
	}
	port, _ := vsocknet.Port(ln)
	ln.Close()
	return port
}

func vsockPortBound(port uint32) bool {
	ln, err := vsocknet.Listen(port)
	if err != nil {
		return true
	}
	ln.Close()
	return false
}

// TestSocketActivatedBrokerServesUnixAndVsock runs the real broker binary
// the way the two socket units start it: systemd-socket-activate binds the
// unix socket and a real AF_VSOCK port and hands both over (LISTEN_FDS);
// the broker takes both, serves the unix peer, keeps the vsock port and
// closes it cleanly on SIGTERM.
func TestSocketActivatedBrokerServesUnixAndVsock(t *testing.T) {
	requireRoot(t)
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed: " + err.Error())
	}
	dir, err := stack.WorldReadableTempDir("vsock-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	brokerPin := keygen(t, filepath.Join(dir, "keys", "broker"))
	workerPin := keygen(t, filepath.Join(dir, "keys", "worker-101"))
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(fmt.Sprintf(`version: 1
transport:
  vsock_guests:
    - {id: guest-101, cid: 101, name: pve-worker, worker_keys: [%s]}
`, workerPin)), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "broker.sock")
	record := filepath.Join(dir, "served.json")
	port := freeVsockPort(t)

	var logBuf syncWriter
	cmd := exec.Command(activate, "-l", sock, "-l", fmt.Sprintf("vsock::%d", port), "--fdname", "broker:vsock", "--",
		filepath.Join(binDir, stack.Broker), "--worker-user", "root", "--policy", policyFile,
		"--policy-dir", filepath.Join(dir, "policy.d"), "--vsock-key", filepath.Join(dir, "keys", "broker.key"),
		"--served-record", record, "--log-format", "json")
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	if !waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil }) {
		t.Fatalf("the activator never created %s:\n%s", sock, logBuf.String())
	}
	if !vsockPortBound(port) {
		t.Fatalf("vsock port %d is not bound by the activator:\n%s", port, logBuf.String())
	}

	// The first connection starts the broker with both sockets.
	res := (&stack.Stack{BinDir: binDir}).Run(ctxT(t), nil, stack.BrokerProbe, "--socket", sock)
	if res.Code != 0 {
		t.Fatalf("probe over the unix socket: %s\nlog:\n%s", res.Stderr, logBuf.String())
	}
	serving := logLine(t, logBuf.String(), "broker serving")
	if serving == nil || serving["socket_activated"] != true ||
		fmt.Sprint(serving["listeners"]) != fmt.Sprintf("[unix %s vsock port %d]", sock, port) {
		t.Fatalf("want the broker serving the unix socket and vsock port %d, socket-activated; log:\n%s", port, logBuf.String())
	}
	if key := logLine(t, logBuf.String(), "vsock key loaded"); key == nil || key["pin"] != brokerPin {
		t.Errorf("the broker did not load the key keygen made (pin %s):\n%s", brokerPin, logBuf.String())
	}
	if !vsockPortBound(port) {
		t.Errorf("vsock port %d not bound while the broker serves", port)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("broker exit: %v\n%s", err, logBuf.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the broker did not stop on SIGTERM:\n%s", logBuf.String())
	}
	if vsockPortBound(port) {
		t.Errorf("vsock port %d still bound after the broker exited", port)
	}
	rec, err := lastserved.Read(record)
	if err != nil || len(rec.Peers) != 1 || rec.Peers[0].Transport != "unix" || rec.Peers[0].UID != 0 || rec.Peers[0].LastRequest != "Probe" {
		t.Errorf("served record %+v (%v): want root's Probe on unix", rec, err)
	}
}

// TestBrokerRefusesAUnixSocketPassedAsVsock: the descriptor named vsock
// (the vsock socket unit's FileDescriptorName=) must be a listening
// AF_VSOCK socket; anything else stops the broker at start, naming it.
func TestBrokerRefusesAUnixSocketPassedAsVsock(t *testing.T) {
	requireRoot(t)
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed: " + err.Error())
	}
	dir, err := stack.WorldReadableTempDir("vsock-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock, notVsock := filepath.Join(dir, "broker.sock"), filepath.Join(dir, "vsock.sock")
	var logBuf syncWriter
	cmd := exec.Command(activate, "-l", sock, "-l", notVsock, "--fdname", "broker:vsock", "--",
		filepath.Join(binDir, stack.Broker), "--worker-user", "root", "--policy", filepath.Join(dir, "policy.yaml"),
		"--policy-dir", filepath.Join(dir, "policy.d"), "--served-record", "", "--log-format", "json")
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if !waitFor(t, func() bool { _, err := os.Stat(notVsock); return err == nil }) {
		t.Fatalf("the activator never created %s:\n%s", notVsock, logBuf.String())
	}
	for _, p := range []string{sock, notVsock} {
		if err := os.Chmod(p, 0o660); err != nil {
			t.Fatal(err)
		}
	}
	// The first connection starts the broker, which refuses to serve.
	res := (&stack.Stack{BinDir: binDir}).Run(ctxT(t), nil, stack.BrokerProbe, "--socket", sock)
	if res.Code == 0 {
		t.Errorf("the broker served with a unix socket passed as vsock")
	}
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(logBuf.String(), `socket activation: \"vsock\"`) ||
			!strings.Contains(logBuf.String(), "not an AF_VSOCK socket") {
			t.Errorf("broker exit %v; want a refusal naming the vsock descriptor:\n%s", err, logBuf.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the broker kept running with a unix socket passed as vsock:\n%s", logBuf.String())
	}
}

// TestBrokerRefusesVsockWithoutItsKey: a vsock listener and no key is a
// clear error at start, and the port is released.
func TestBrokerRefusesVsockWithoutItsKey(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freeVsockPort(t)
	out, err := exec.Command(filepath.Join(binDir, stack.Broker), "--socket", "", "--vsock-port", strconv.FormatUint(uint64(port), 10),
		"--vsock-key", filepath.Join(dir, "absent.key"), "--policy", filepath.Join(dir, "policy.yaml"),
		"--policy-dir", filepath.Join(dir, "policy.d"), "--served-record", "", "--log-format", "text").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "a vsock listener needs the broker's key (create it with: nannyagent-broker keygen --out "+filepath.Join(dir, "absent")) {
		t.Errorf("want a refusal naming keygen, got %v:\n%s", err, out)
	}
	if vsockPortBound(port) {
		t.Errorf("vsock port %d left bound after the refusal", port)
	}
}

// TestWorkerWithVsockBrokerNeedsItsKey: the worker binary configured for a
// vsock broker without its key stops at start with one error naming the
// key, before it dials anything.
func TestWorkerWithVsockBrokerNeedsItsKey(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(binDir, stack.Worker), "--config", filepath.Join(dir, "none.yaml"),
		"--api-url", "http://127.0.0.1:9", "--worker-socket", filepath.Join(dir, "w.sock"),
		"--state-dir", filepath.Join(dir, "state"), "--token-path", filepath.Join(dir, "state", "token.json"),
		"--broker-socket", "vsock://2:5101", "--broker-key-pins", "sha256:"+strings.Repeat("ab", 32),
		"--broker-vsock-key", filepath.Join(dir, "absent.key"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "config broker_vsock_key") {
		t.Errorf("want the worker to stop naming broker_vsock_key, got %v:\n%s", err, out)
	}
}

// TestGuestWorkerDropIn checks the guest's drop-in with systemd-analyze:
// it loads cleanly over the worker's unit, and the sandbox stays within
// the worker's exposure bound with AF_VSOCK added.
func TestGuestWorkerDropIn(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: " + err.Error())
	}
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := unitDir(t)
	dropDir := filepath.Join(dir, "nannyagent-worker.service.d")
	if err := os.MkdirAll(dropDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(root, "systemd", "guest", "nannyagent-worker.service.d", "vsock.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropDir, "vsock.conf"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "nannyagent-worker.service")
	if out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("verify with the guest drop-in: %v\n%s", err, out)
	}
	out, _ := exec.Command(analyze, "security", "--offline=yes", unit).CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure in:\n%s", out)
	}
	got, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("guest worker exposure %.1f", got)
	if got > 2.0 {
		t.Errorf("guest worker exposure %.1f above 2.0", got)
	}
	// The drop-in must be what systemd-analyze judged: AF_VSOCK is allowed.
	if !strings.Contains(string(out), "RestrictAddressFamilies=~…") || !strings.Contains(string(out), "exotic") {
		t.Errorf("the drop-in's AF_VSOCK did not reach the unit:\n%s", out)
	}
}

// logLine returns the first JSON log line with msg.
func logLine(t *testing.T, log, msg string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	return nil
}

// syncWriter collects a process's output safely across goroutines.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
