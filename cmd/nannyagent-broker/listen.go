package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
)

// listeners are what the broker serves: its unix socket, its vsock port,
// or both.
type listeners struct {
	unix, vsock []net.Listener
	activated   bool
}

func (l listeners) all() []net.Listener {
	return append(append([]net.Listener(nil), l.unix...), l.vsock...)
}

func (l listeners) close() {
	for _, ln := range l.all() {
		ln.Close()
	}
}

// addrs names every listener for the log.
func (l listeners) addrs() []string {
	var out []string
	for _, ln := range l.unix {
		out = append(out, "unix "+ln.Addr().String())
	}
	for _, ln := range l.vsock {
		port, _ := vsocknet.Port(ln)
		out = append(out, fmt.Sprintf("vsock port %d", port))
	}
	return out
}

// The socket units' FileDescriptorName=: the broker takes each passed
// socket by its name.
const (
	socketName = "broker" // nannyagent-broker.socket
	vsockName  = "vsock"  // nannyagent-broker-vsock.socket
)

// listen takes the sockets systemd passed (unix, vsock, or both: the vsock
// one comes from nannyagent-broker-vsock.socket) or, when not activated,
// creates the unix socket (unless --socket is empty) with the runtime
// layout's modes (directory 0750 and socket 0660, group-owned by the
// worker's group) and binds --vsock-port (unless 0).
func listen(ctx context.Context, o options) (listeners, error) {
	passed := unixsock.Passed()
	l, err := takePassed(passed)
	// A passed socket the broker does not serve is a unit that does not
	// match it: refused, like any other error here.
	if cerr := passed.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		l.close()
		return listeners{}, err
	}
	if len(l.all()) > 0 {
		l.activated = true
		return l, nil
	}
	if o.socket != "" {
		gid, err := socketGID(o.socketGroup)
		if err != nil {
			return listeners{}, err
		}
		ln, err := unixsock.Listen(ctx, unixsock.ListenConfig{Path: o.socket, DirMode: 0o750, SocketMode: 0o660, GID: gid})
		if err != nil {
			return listeners{}, err
		}
		l.unix = append(l.unix, ln)
	}
	if o.vsockPort != 0 {
		ln, err := vsocknet.Listen(uint32(o.vsockPort))
		if err != nil {
			l.close()
			return listeners{}, err
		}
		l.vsock = append(l.vsock, ln)
	}
	if len(l.all()) == 0 {
		return listeners{}, errors.New("nothing to listen on: --socket is empty and --vsock-port is 0")
	}
	return l, nil
}

// takePassed takes the unix socket passed as "broker" (or the one unnamed
// unix socket) and the AF_VSOCK socket passed as "vsock".
func takePassed(passed *unixsock.Activation) (listeners, error) {
	var l listeners
	ul, err := passed.Unix(socketName)
	if err != nil {
		return l, err
	}
	if ul != nil {
		l.unix = append(l.unix, ul)
	}
	f, err := passed.File(vsockName)
	if err != nil || f == nil {
		return l, err
	}
	defer f.Close() // the listener holds its own descriptor
	vl, err := vsocknet.FileListener(f)
	if err != nil {
		return l, fmt.Errorf("socket activation: %q: %w", vsockName, err)
	}
	l.vsock = append(l.vsock, vl)
	return l, nil
}

// watchdogNeedsUnix refuses to serve vsock alone under systemd's watchdog:
// its liveness round trip (broker.Server.Alive) dials the unix socket, so
// without one every round trip would fail and systemd would restart the
// broker over and over.
func watchdogNeedsUnix(l listeners) error {
	if len(l.unix) > 0 {
		return nil
	}
	if interval, err := daemon.SdWatchdogEnabled(false); err != nil || interval <= 0 {
		return nil
	}
	return errors.New("WatchdogSec= is set but no unix socket is served: the watchdog's round trip dials it (serve nannyagent-broker.socket or --socket beside the vsock port)")
}

// vsockIdentity loads the broker's key when it serves vsock; without a
// vsock listener it needs none.
func vsockIdentity(o options, l listeners, log *slog.Logger) (*keypin.Identity, error) {
	if len(l.vsock) == 0 {
		return nil, nil
	}
	id, err := keypin.LoadIdentity(o.vsockKey, "nannyagent-broker")
	if err != nil {
		return nil, fmt.Errorf("a vsock listener needs the broker's key (create it with: nannyagent-broker keygen --out %s): %w",
			trimKeySuffix(o.vsockKey), err)
	}
	if os.Geteuid() == 0 {
		if err := keypin.CheckOwner(o.vsockKey, 0); err != nil {
			return nil, err
		}
	}
	log.Info("vsock key loaded", "key", o.vsockKey, "pin", id.Pin)
	return id, nil
}

func trimKeySuffix(path string) string {
	if len(path) > 4 && path[len(path)-4:] == ".key" {
		return path[:len(path)-4]
	}
	return path
}

// socketGID resolves the socket group; without root the socket keeps the
// broker's own group.
func socketGID(name string) (int, error) {
	if os.Geteuid() != 0 {
		return -1, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}
