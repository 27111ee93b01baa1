// Package vsocknet carries the broker's gRPC over AF_VSOCK, for a worker
// that runs in a VM guest while the broker runs on the host: it binds a
// vsock listener, takes the vsock (and unix) sockets systemd passes, dials
// the host from a guest, and reads vsock://CID:PORT addresses. It uses
// github.com/mdlayher/vsock for the sockets; who may connect is
// ipc/peerauth's business.
package vsocknet

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Scheme starts a vsock address in configuration.
const Scheme = "vsock://"

// HostCID is the host's context id as a guest sees it (VMADDR_CID_HOST).
const HostCID = unix.VMADDR_CID_HOST

// Addr is a vsock endpoint.
type Addr struct {
	CID, Port uint32
}

func (a Addr) String() string { return fmt.Sprintf("%s%d:%d", Scheme, a.CID, a.Port) }

// IsAddr reports whether s is written as a vsock address (it may still be
// malformed; ParseAddr says).
func IsAddr(s string) bool { return strings.HasPrefix(s, Scheme) }

// ParseAddr reads "vsock://CID:PORT". The CID must name a peer (not the
// hypervisor, 0, nor "any", -1U) and the port must be concrete.
func ParseAddr(s string) (Addr, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return Addr{}, fmt.Errorf("%q is not a vsock address (want %sCID:PORT, e.g. %s%d:5101)", s, Scheme, Scheme, HostCID)
	}
	cidText, portText, ok := strings.Cut(rest, ":")
	if !ok {
		return Addr{}, fmt.Errorf("%q: want %sCID:PORT", s, Scheme)
	}
	cid, err := parseUint32(cidText)
	if err != nil {
		return Addr{}, fmt.Errorf("%q: context id: %w", s, err)
	}
	port, err := parseUint32(portText)
	if err != nil {
		return Addr{}, fmt.Errorf("%q: port: %w", s, err)
	}
	if cid == unix.VMADDR_CID_HYPERVISOR || cid == unix.VMADDR_CID_ANY {
		return Addr{}, fmt.Errorf("%q: context id %d does not name a peer", s, cid)
	}
	if port == 0 || port == unix.VMADDR_PORT_ANY {
		return Addr{}, fmt.Errorf("%q: port %d is not a concrete port", s, port)
	}
	return Addr{CID: cid, Port: port}, nil
}

// parseUint32 takes plain decimal digits only: no sign, no base prefix, no
// blanks, so an address means one thing.
func parseUint32(s string) (uint32, error) {
	if s == "" || len(s) > 10 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return uint32(n), nil
}

// Listen binds an AF_VSOCK stream listener on port for any local context id
// (the host answers on CID 2 as seen from its guests). Port 0 lets the
// kernel choose; Addr says which.
func Listen(port uint32) (net.Listener, error) {
	ln, err := vsock.ListenContextID(unix.VMADDR_CID_ANY, port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return ln, nil
}

// Port is the port a vsock listener is bound to, or false when ln is not a
// vsock listener.
func Port(ln net.Listener) (uint32, bool) {
	a, ok := ln.Addr().(*vsock.Addr)
	if !ok {
		return 0, false
	}
	return a.Port, true
}

// DialFunc connects to a vsock endpoint. Dial is the real one; tests hand a
// worker another so that no test dials a context id.
type DialFunc func(ctx context.Context, a Addr) (net.Conn, error)

// Dial connects to a vsock endpoint.
func Dial(ctx context.Context, a Addr) (net.Conn, error) {
	c, err := vsock.DialContext(ctx, a.CID, a.Port, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", a, err)
	}
	return c, nil
}

// PeerCID returns the context id of the other end of a vsock connection,
// as the kernel reported it at accept(2), or false for any other
// connection.
func PeerCID(conn net.Conn) (uint32, bool) {
	a, ok := conn.RemoteAddr().(*vsock.Addr)
	if !ok || a == nil {
		return 0, false
	}
	return a.ContextID, true
}

// PeerAddr is the net.Addr of a vsock peer. Tests that cannot connect over
// vsock (a guest has no loopback transport) wrap a socket pair's conn so
// that it reports one.
func PeerAddr(cid, port uint32) net.Addr { return &vsock.Addr{ContextID: cid, Port: port} }

// DialGRPC returns a lazy gRPC client connection to a broker at a, made
// through dial (Dial in production) and secured by creds.
func DialGRPC(a Addr, creds credentials.TransportCredentials, dial DialFunc, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if dial == nil {
		dial = Dial
	}
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dial(ctx, a) }),
	}, opts...)
	// passthrough: the address is not a host name to resolve; the dialer
	// above knows where to go.
	conn, err := grpc.NewClient("passthrough:///"+a.String(), all...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", a, err)
	}
	return conn, nil
}
