package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/test/stack"
)

// attackTree is a directory standing in for /var/log: root-owned, with an
// application's log directory owned by an unprivileged account (daemon),
// an ordinary log file, and a file standing in for a secret.
type attackTree struct {
	root, appDir, plainLog, secret string
}

func newAttackTree(t *testing.T) attackTree {
	t.Helper()
	root, err := stack.WorldReadableTempDir("nannyagent-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	tr := attackTree{root: root, appDir: filepath.Join(root, "app"), plainLog: filepath.Join(root, "syslog"), secret: filepath.Join(root, "secret", "shadow")}
	for _, d := range []string{tr.appDir, filepath.Dir(tr.secret)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(tr.plainLog, []byte("ordinary log line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tr.secret, []byte("root:$6$SECRETHASH:19000:0:99999:7:::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	daemon, err := stack.LookupIdentity("daemon")
	if err != nil {
		t.Skip("no daemon account here")
	}
	if err := os.Chown(tr.appDir, int(daemon.UID), int(daemon.GID)); err != nil {
		t.Fatal(err)
	}
	return tr
}

// attackPolicy allows cat and true under the tree and a setsid test rule;
// the secret stands for /etc/shadow and is denied like it.
func (tr attackTree) policy() string {
	return fmt.Sprintf(`version: 1
limits:
  command_timeout: 2s
  concurrent_commands: 8
deny_paths:
  - {id: deny-shadow, paths: [/etc/shadow, %q], reason: password hashes}
  - {id: deny-proc-secrets, paths: ["/proc/*/{environ,mem,root,cwd,fd}"], reason: process secrets}
commands:
  - id: cat
    program: /usr/bin/cat
    operands:
      - {name: file, type: path, roots: [%q, /etc, /proc], open: fd, count: 1-4}
  - id: "true"
    program: /usr/bin/true
  - id: setsid-sleep
    program: /usr/bin/setsid
    options:
      - {opt: [-f, --fork]}
    operands:
      - {name: prog, type: keyword, word: /usr/bin/sleep}
      - {name: seconds, type: number, min: 1, max: 1000}
`, tr.secret, tr.root)
}

func brokerClient(t *testing.T, s *stack.Stack) (brokerv1.BrokerServiceClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := unixsock.Dial(s.BrokerSocket, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return brokerv1.NewBrokerServiceClient(conn), conn
}

func run(t *testing.T, c brokerv1.BrokerServiceClient, argvs ...[]string) *brokerv1.RunCommandResponse {
	t.Helper()
	req := &brokerv1.RunCommandRequest{}
	for _, a := range argvs {
		req.Stages = append(req.Stages, &brokerv1.Stage{Argv: a})
	}
	resp, err := c.RunCommand(ctxT(t), req)
	if err != nil {
		t.Fatalf("RunCommand %v: %v", argvs, err)
	}
	return resp
}

func TestCompromisedWorkerAttacks(t *testing.T) {
	requireRoot(t)
	tr := newAttackTree(t)
	s := startStack(t, stack.Options{Policy: tr.policy()})
	c, _ := brokerClient(t, s)

	if resp := run(t, c, []string{"cat", tr.plainLog}); !resp.GetDecision().GetAllowed() || string(resp.GetStdout()) != "ordinary log line\n" {
		t.Fatalf("control command failed: %v", resp)
	}

	// A link planted in the app's own log directory, pointing at secrets.
	for name, target := range map[string]string{"shadow.log": "/etc/shadow", "fake.log": tr.secret, "ok.log": tr.plainLog} {
		if err := os.Symlink(target, filepath.Join(tr.appDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"shadow.log", "fake.log", "ok.log"} {
		resp := run(t, c, []string{"cat", filepath.Join(tr.appDir, name)})
		if resp.GetDecision().GetAllowed() || len(resp.GetStdout()) != 0 {
			t.Errorf("planted link %s followed: %v", name, resp)
		}
	}

	// Aliases of secrets.
	for _, p := range []string{"/proc/self/root/etc/shadow", "/proc/1/root/etc/shadow", "/proc/self/environ", "/proc/thread-self/environ",
		tr.root + "/../" + filepath.Base(tr.root) + "/secret/shadow", "/etc//shadow"} {
		resp := run(t, c, []string{"cat", p})
		if resp.GetDecision().GetAllowed() || strings.Contains(string(resp.GetStdout()), "SECRETHASH") || strings.Contains(string(resp.GetStdout()), "root:") {
			t.Errorf("%s read: %v", p, resp)
		}
	}

	// 1,000 stages: refused before anything runs.
	stages := make([][]string, 1000)
	for i := range stages {
		stages[i] = []string{"true"}
	}
	if resp := run(t, c, stages...); resp.GetDecision().GetAllowed() {
		t.Error("a 1,000-stage pipeline was allowed")
	}

	// A 64 MiB argv never reaches a handler: the message limit refuses it.
	huge := strings.Repeat("A", 64<<20)
	_, err := c.RunCommand(ctxT(t), &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"cat", huge}}}})
	if code := status.Code(err); code != codes.ResourceExhausted {
		t.Errorf("64 MiB argv: %v, want ResourceExhausted", err)
	}

	// A grandchild that calls setsid and sleeps must not outlive its run.
	resp := run(t, c, []string{"setsid", "-f", "/usr/bin/sleep", "987"})
	if !resp.GetDecision().GetAllowed() {
		t.Fatalf("setsid rule denied: %v", resp.GetDecision())
	}
	if pids := sleepers("987"); len(pids) > 0 {
		t.Errorf("setsid grandchild survived its run: pids %v", pids)
	}

	if _, err := c.Probe(ctxT(t), &brokerv1.ProbeRequest{}); err != nil {
		t.Fatalf("broker stopped answering: %v", err)
	}
}

// sleepers lists processes running "sleep <arg>".
func sleepers(arg string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.HasSuffix(string(cmdline), "sleep\x00"+arg+"\x00") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestLinkSwappedBetweenCheckAndOpen(t *testing.T) {
	requireRoot(t)
	tr := newAttackTree(t)
	s := startStack(t, stack.Options{Policy: tr.policy()})
	c, _ := brokerClient(t, s)
	// The link sits in a root-owned directory, so the broker follows it; a
	// racer swaps it between the ordinary log and the secret.
	link := filepath.Join(tr.root, "current.log")
	if err := os.Symlink(tr.plainLog, link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tmp := link + ".new"
		for i := 0; ctx.Err() == nil; i++ {
			target := tr.plainLog
			if i%2 == 1 {
				target = tr.secret
			}
			_ = os.Remove(tmp)
			_ = os.Symlink(target, tmp)
			_ = os.Rename(tmp, link)
		}
	}()
	var allowed, denied int
	for i := 0; i < 300; i++ {
		resp := run(t, c, []string{"cat", link})
		if strings.Contains(string(resp.GetStdout()), "SECRETHASH") {
			cancel()
			wg.Wait()
			t.Fatalf("iteration %d read the secret through a swapped link", i)
		}
		if resp.GetDecision().GetAllowed() {
			allowed++
		} else {
			denied++
		}
	}
	cancel()
	wg.Wait()
	t.Logf("swapped link: %d reads of the ordinary log, %d refusals, 0 leaks", allowed, denied)
	if allowed == 0 || denied == 0 {
		t.Logf("the race did not exercise both outcomes this time")
	}
}

func TestTenThousandConcurrentRequests(t *testing.T) {
	requireRoot(t)
	tr := newAttackTree(t)
	s := startStack(t, stack.Options{Policy: tr.policy()})
	flood, _ := brokerClient(t, s)
	// Probes go on their own connection, as the worker's status would not
	// share a stream quota with an attacker's flood.
	probes, _ := brokerClient(t, s)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var served, refused, failed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 10000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := flood.RunCommand(ctx, &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"true"}}}})
			switch {
			case err != nil:
				failed.Add(1)
			case resp.GetDecision().GetAllowed():
				served.Add(1)
			default:
				refused.Add(1)
			}
		}()
	}
	var slowest time.Duration
	var probeErrs int
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
probing:
	for {
		select {
		case <-done:
			break probing
		case <-time.After(100 * time.Millisecond):
			start := time.Now()
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := probes.Probe(pctx, &brokerv1.ProbeRequest{})
			pcancel()
			if err != nil {
				probeErrs++
			}
			slowest = max(slowest, time.Since(start))
		}
	}
	t.Logf("10,000 requests: %d ran, %d refused (busy), %d failed; slowest Probe meanwhile %v", served.Load(), refused.Load(), failed.Load(), slowest)
	if probeErrs > 0 {
		t.Errorf("%d Probes failed during the flood", probeErrs)
	}
	if failed.Load() > 0 {
		t.Errorf("%d requests failed instead of being served or refused", failed.Load())
	}
	if s.BrokerProcess().Exited() {
		t.Fatal("the broker died")
	}
}

func TestRunAsEnvironmentAndOutputCaps(t *testing.T) {
	requireRoot(t)
	tr := newAttackTree(t)
	big := filepath.Join(tr.root, "big.log")
	if err := os.WriteFile(big, []byte(strings.Repeat("0123456789abcdef\n", 1024)), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startStack(t, stack.Options{Policy: fmt.Sprintf(`version: 1
limits: {stdout_bytes: 1KiB}
commands:
  - {id: id-nobody, program: /usr/bin/id, run_as: nobody}
  - {id: env, program: /usr/bin/env}
  - id: cat
    program: /usr/bin/cat
    operands: [{name: file, type: path, roots: [%q], open: fd}]
`, tr.root)})
	c, _ := brokerClient(t, s)
	if out := string(run(t, c, []string{"id"}).GetStdout()); out != "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n" {
		t.Errorf("run_as nobody: id printed %q", out)
	}
	if out := string(run(t, c, []string{"env"}).GetStdout()); out != "PATH=/usr/sbin:/usr/bin:/sbin:/bin\nLANG=C.UTF-8\n" {
		t.Errorf("environment not scrubbed: %q", out)
	}
	resp := run(t, c, []string{"cat", big})
	if len(resp.GetStdout()) != 1024 || !resp.GetStdoutTruncated() || resp.GetExitCode() != 0 {
		t.Errorf("output cap: %d bytes, truncated %v, exit %d", len(resp.GetStdout()), resp.GetStdoutTruncated(), resp.GetExitCode())
	}
}
