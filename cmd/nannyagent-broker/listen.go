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

// listen takes the sockets systemd passed (unix, vsock, or both: the vsock
// ones come from nannyagent-broker-vsock.socket) or, when not activated,
// creates the unix socket (unless --socket is empty) with the runtime
// layout's modes (directory 0750 and socket 0660, group-owned by the
// worker's group) and binds --vsock-port (unless 0).
func listen(ctx context.Context, o options) (listeners, error) {
	act, err := vsocknet.TakeActivated()
	if err != nil {
		return listeners{}, err
	}
	if len(act.All()) > 0 {
		return listeners{unix: act.Unix, vsock: act.Vsock, activated: true}, nil
	}
	var l listeners
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
