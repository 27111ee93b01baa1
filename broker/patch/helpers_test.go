package patch

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// execLauncher is a plain os/exec launcher: real processes, stdin
// /dev/null, the given environment and descriptors. The broker's real
// launcher (cgroups, caps) is tested in package execute and end to end.
type execLauncher struct {
	mu    sync.Mutex
	specs []Spec
	fail  error
}

func (l *execLauncher) Launch(s Spec) (Process, error) {
	l.mu.Lock()
	l.specs = append(l.specs, s)
	l.mu.Unlock()
	if l.fail != nil {
		return nil, l.fail
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	cmd := exec.CommandContext(ctx, s.Program)
	cmd.Args, cmd.Env, cmd.ExtraFiles, cmd.Dir = s.Argv, s.Env, s.Files, "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	p := &execProc{cmd: cmd, cancel: cancel, ctx: ctx, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.err
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		p.werr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (l *execLauncher) calls() []Spec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Spec(nil), l.specs...)
}

type execProc struct {
	cmd      *exec.Cmd
	ctx      context.Context
	cancel   context.CancelFunc
	out, err bytes.Buffer
	werr     error
	killed   bool
	done     chan struct{}
	mu       sync.Mutex
}

func (p *execProc) Wait() Exit {
	<-p.done
	defer p.cancel()
	x := Exit{Code: p.cmd.ProcessState.ExitCode(), Stdout: p.out.Bytes(), Stderr: p.err.Bytes()}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		x.Code, x.Signal = -1, ws.Signal().String()
	}
	p.mu.Lock()
	x.Killed = p.killed
	p.mu.Unlock()
	x.TimedOut = !x.Killed && errors.Is(p.ctx.Err(), context.DeadlineExceeded)
	return x
}

func (p *execProc) Kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	p.cancel()
}

// settings for tests: the host's shells, the host's PATH.
func testSettings() Settings {
	return Settings{
		Rule: "test-pin", Interpreters: []string{"/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash"},
		Path: "/usr/sbin:/usr/bin:/sbin:/bin", Timeout: 10 * time.Second, ScriptBytes: 1 << 20, OutputBytes: 1 << 20,
	}
}

func newManager(t *testing.T, l Launcher) (*Manager, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	m, err := New(Config{StateDir: dir, Launcher: l})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, dir
}

func request(op string, script string, mode Mode, excl ...string) Request {
	return Request{OperationID: op, Script: []byte(script), SHA256: Sum([]byte(script)), Mode: mode, Exclusions: excl, Name: "test.sh"}
}

// waitDone polls the record until the run is over.
func waitDone(t *testing.T, m *Manager, op string) Record {
	t.Helper()
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		r, err := m.Result(op)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != Running {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("run %s did not finish", op)
	return Record{}
}
