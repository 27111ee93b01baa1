package e2e

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
)

// terminal is a process on a pseudo-terminal and everything it printed.
type terminal struct {
	t    *testing.T
	ptmx *os.File
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	read int // how much of out expect has consumed
}

func startTerminal(t *testing.T, cmd *exec.Cmd, attrs *syscall.SysProcAttr) *terminal {
	t.Helper()
	ptmx, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: 50, Cols: 200}, attrs)
	if err != nil {
		t.Fatal(err)
	}
	term := &terminal{t: t, ptmx: ptmx, cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(term.done)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			term.mu.Lock()
			term.out.Write(buf[:n])
			term.mu.Unlock()
			if err != nil { // EIO once the process has gone
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		ptmx.Close()
		<-term.done
	})
	return term
}

// expect waits until want appears after what earlier calls consumed.
func (term *terminal) expect(want string) {
	term.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		term.mu.Lock()
		rest := term.out.String()[term.read:]
		if i := strings.Index(rest, want); i >= 0 {
			term.read += i + len(want)
			term.mu.Unlock()
			return
		}
		term.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	term.t.Fatalf("the terminal never showed %q; it shows:\n%s", want, term.all())
}

func (term *terminal) all() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.out.String()
}

func (term *terminal) typeLine(s string) {
	term.t.Helper()
	if _, err := io.WriteString(term.ptmx, s+"\r"); err != nil {
		term.t.Fatal(err)
	}
}

// TestInteractivePrompt drives the reference agent's prompt through a real
// terminal: refusals of short and incomplete issues, one whole diagnosis
// served by the worker, then quit. As root the CLI runs as an ordinary
// member of the admin group: the prompt needs no privilege of its own.
func TestInteractivePrompt(t *testing.T) {
	ai := fakeapi.NewScriptedAI(
		`{"response_type":"diagnostic","reasoning":"load first `+jsonEscape(escape)+`","commands":["uptime"],"ebpf_programs":[]}`,
		fakeapi.Resolution("an idle host", "1. nothing to do"))
	s, srv := operatorStack(t, ai)
	cmd := exec.Command(filepath.Join(binDir, stack.CLI), "--socket", s.WorkerSocket)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"}
	cmd.Dir = "/"
	attrs := &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if os.Geteuid() == 0 {
		attrs.Credential = cred(t, "bin", s.AdminGID)
	}
	term := startTerminal(t, cmd, attrs)

	term.expect("describe an issue")
	term.expect("> ")
	term.typeLine("slow")
	term.expect("too short")
	term.expect("> ")
	term.typeLine("disk is-slow-today")
	term.expect("incomplete")
	term.expect("> ")
	term.typeLine("the disk is slow today")
	term.expect("--- turn 1: the model asks for 1 command")
	term.expect("  ran      uptime")
	term.expect("=== DIAGNOSIS COMPLETE ===")
	term.expect("Root cause: an idle host")
	term.expect("> ")
	term.typeLine("quit")
	term.expect("Goodbye!")

	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) || err != nil {
			t.Errorf("the prompt exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the prompt did not exit after quit")
	}
	if strings.Contains(term.all(), "\x1b]0;owned") || strings.ContainsRune(term.all(), '\u009b') {
		t.Errorf("the model's control characters reached the terminal:\n%q", term.all())
	}
	// The worker ran it: one investigation, created on the backend by the
	// worker for this issue, two model turns.
	var ids []string
	for _, tr := range srv.AITurns() {
		if tr.Round == 1 {
			ids = append(ids, tr.InvestigationID)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("%d investigations ran, want 1", len(ids))
	}
	if turns, _ := turnsFor(srv, ids[0]); turns != 2 {
		t.Errorf("the investigation ran %d turns, want 2", turns)
	}
}
