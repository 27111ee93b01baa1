package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/test/stack"
)

// activated starts the broker behind systemd-socket-activate, which listens
// on sock, and on the first connection execs the broker in its own place
// with the socket as fd 3 (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID): the
// hand-off systemd makes. The socket file gets mode, as SocketMode= would.
func activated(t *testing.T, mode os.FileMode, sock string, brokerArgs ...string) (*exec.Cmd, *activationLog, *exited) {
	t.Helper()
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed: " + err.Error())
	}
	dir := filepath.Dir(sock)
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("version: 1\ncommands:\n  - {id: uptime, program: /usr/bin/uptime}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--listen=" + sock, "--fdname=broker", "--",
		filepath.Join(binDir, stack.Broker), "--worker-user", "daemon", "--policy", policy,
		"--policy-dir", filepath.Join(dir, "policy.d"), "--log-format", "json"}, brokerArgs...)
	cmd := exec.Command(sa, args...)
	log := &activationLog{path: filepath.Join(dir, "broker.log")}
	f, err := os.Create(log.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A file, not a pipe: Wait returns when the process exits.
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := &exited{ch: make(chan struct{})}
	go func() {
		done.err = cmd.Wait()
		close(done.ch)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done.ch
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode().Type() == os.ModeSocket {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate did not listen on %s:\n%s", sock, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.Chmod(sock, mode); err != nil {
		t.Fatal(err)
	}
	return cmd, log, done
}

// exited is closed when the activated process ended; err is how.
type exited struct {
	ch  chan struct{}
	err error
}

// activationLog is what the activated process wrote.
type activationLog struct{ path string }

func (l *activationLog) String() string {
	b, _ := os.ReadFile(l.path)
	return string(b)
}

func exe(pid int) string {
	p, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	return p
}

// TestBrokerSocketActivatedWithoutSystemd: the broker takes the socket it is
// handed, serves a client on it without making its own, and exits when
// idle. Starting it again on the next connection is systemd's part (the
// booted test in test/units shows it).
func TestBrokerSocketActivatedWithoutSystemd(t *testing.T) {
	requireRoot(t)
	dir, err := stack.WorldReadableTempDir("nannyagent-activation-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "broker.sock")
	own := filepath.Join(dir, "own", "broker.sock")
	cmd, log, done := activated(t, 0o660, sock, "--socket", own, "--idle-exit", "1s")

	// Nothing asked yet: the process is still systemd-socket-activate.
	if got := filepath.Base(exe(cmd.Process.Pid)); got != "systemd-socket-activate" {
		t.Fatalf("before the first connection the process is %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, stack.BrokerProbe), "-socket", sock).CombinedOutput()
	if err != nil {
		t.Fatalf("probe through the handed-over socket: %v\n%s\nbroker:\n%s", err, out, log.String())
	}
	var probe brokerv1.ProbeResponse
	if err := protojson.Unmarshal(out, &probe); err != nil || probe.GetPolicy().GetSha256() == "" {
		t.Fatalf("probe answer: %v\n%s", err, out)
	}
	if got := exe(cmd.Process.Pid); got != filepath.Join(binDir, stack.Broker) {
		t.Errorf("the connection did not exec the broker in place: %q", got)
	}
	select {
	case <-done.ch:
		if done.err != nil {
			t.Errorf("broker exit: %v\n%s", done.err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the broker did not exit 1s after its last request:\n%s", log.String())
	}
	for _, want := range []string{`"socket_activated":true`, `"idle, exiting"`} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("broker log lacks %s:\n%s", want, log.String())
		}
	}
	if _, err := os.Stat(own); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket-activated broker made its own socket too: %v", err)
	}
}

// TestBrokerRefusesWorldWritableActivatedSocket: a socket file every
// account may connect to (systemd's default SocketMode=0666) is refused.
func TestBrokerRefusesWorldWritableActivatedSocket(t *testing.T) {
	requireRoot(t)
	dir, err := stack.WorldReadableTempDir("nannyagent-activation-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "broker.sock")
	_, log, done := activated(t, 0o666, sock, "--idle-exit", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, filepath.Join(binDir, stack.BrokerProbe), "-socket", sock).CombinedOutput(); err == nil {
		t.Errorf("a world-writable socket was served:\n%s", out)
	}
	select {
	case <-done.ch:
		if done.err == nil || !strings.Contains(log.String(), "every account may connect") {
			t.Errorf("broker exit %v, log:\n%s", done.err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the broker kept running on a world-writable socket:\n%s", log.String())
	}
}
