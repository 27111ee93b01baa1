package stack

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// activator plays systemd's part for a socket unit: it owns the broker's
// listening socket and starts a broker on it whenever a connection is
// waiting and no broker runs, handing the socket over as fd 3 with
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID. A broker that exits when idle
// is started again by the next connection, as nannyagent-broker.socket
// does (systemd-socket-activate cannot: it execs the service in its own
// place once).
type activator struct {
	s    *Stack
	ln   *net.UnixListener
	file *os.File
	bin  string
	args []string
	env  []string

	mu          sync.Mutex
	current     *Process
	activations int

	stop chan struct{}
	done chan struct{}
}

// listenActivated creates the broker socket as the socket unit would:
// directory 0750 and socket 0660, group-owned by the worker's group.
func (s *Stack) listenActivated() (*net.UnixListener, *os.File, error) {
	dir := filepath.Dir(s.BrokerSocket)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.BrokerSocket, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	ln.SetUnlinkOnClose(true)
	gid := -1
	if os.Geteuid() == 0 {
		gid = int(s.Worker.GID)
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o750}, {s.BrokerSocket, 0o660}} {
		if err := os.Chown(p.path, -1, gid); err != nil {
			ln.Close()
			return nil, nil, err
		}
		if err := os.Chmod(p.path, p.mode); err != nil {
			ln.Close()
			return nil, nil, err
		}
	}
	f, err := ln.File()
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return ln, f, nil
}

// startActivator begins watching the socket.
func (s *Stack) startActivator(bin string, args, env []string) error {
	ln, f, err := s.listenActivated()
	if err != nil {
		return fmt.Errorf("broker socket: %w", err)
	}
	a := &activator{s: s, ln: ln, file: f, bin: bin, args: args, env: env,
		stop: make(chan struct{}), done: make(chan struct{})}
	s.activator = a
	go a.loop()
	return nil
}

func (a *activator) loop() {
	defer close(a.done)
	fds := []unix.PollFd{{Fd: int32(a.file.Fd()), Events: unix.POLLIN}}
	for {
		select {
		case <-a.stop:
			return
		default:
		}
		a.mu.Lock()
		running := a.current != nil && !a.current.Exited()
		a.mu.Unlock()
		if running {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		n, err := unix.Poll(fds, 50)
		if err != nil || n == 0 || fds[0].Revents&unix.POLLIN == 0 {
			continue
		}
		p, err := a.spawn()
		a.mu.Lock()
		if err == nil {
			a.current = p
			a.activations++
		}
		a.mu.Unlock()
		if err != nil {
			fmt.Fprintln(os.Stderr, "stack: activate the broker:", err)
			time.Sleep(time.Second)
		}
	}
}

// spawn starts one broker through sh, which joins the stack's cgroups
// first (so its start-up counts) and sets LISTEN_PID to its own pid before
// exec'ing the broker in its place.
func (a *activator) spawn() (*Process, error) {
	var script strings.Builder
	for _, cg := range a.s.cgroups {
		fmt.Fprintf(&script, "echo $$ > '%s/cgroup.procs' || exit 1; ", cg)
	}
	script.WriteString(`LISTEN_PID=$$ exec "$0" "$@"`)
	args := append([]string{"-c", script.String(), a.bin}, a.args...)
	env := append([]string{"LISTEN_FDS=1", "LISTEN_FDNAMES=broker"}, a.env...)
	return a.s.spawn("/bin/sh", args, nil, env, "broker.log", 0, []*os.File{a.file})
}

// Activations is how many brokers the socket has started so far.
func (s *Stack) Activations() int {
	if s.activator == nil {
		return 1
	}
	s.activator.mu.Lock()
	defer s.activator.mu.Unlock()
	return s.activator.activations
}

// close stops activating, waits for a running broker (stopped by Stop),
// and removes the socket.
func (a *activator) close() {
	close(a.stop)
	<-a.done
	a.file.Close()
	a.ln.Close()
}

func (a *activator) broker() *Process {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current
}

// ActivateBroker connects to the broker socket once, so a socket-activated
// broker starts, and waits until it runs.
func (s *Stack) ActivateBroker(ctx context.Context) error {
	conn, err := net.Dial("unix", s.BrokerSocket)
	if err != nil {
		return err
	}
	defer conn.Close()
	for {
		if p := s.BrokerProcess(); p != nil && !p.Exited() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
