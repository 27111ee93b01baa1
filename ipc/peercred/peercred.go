// Package peercred authenticates unix-socket peers by the credentials the
// kernel recorded at connect(2) (SO_PEERCRED, SO_PEERGROUPS) during the gRPC
// handshake, before any request is read. A refused peer never reaches a
// handler: its connection is closed in the handshake.
package peercred

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Peer is the kernel's record of who connected.
type Peer struct {
	UID uint32
	GID uint32
	PID int32
	// Groups are the supplementary groups at connect time (SO_PEERGROUPS).
	Groups []uint32
}

// InGroup reports whether gid is the peer's primary or a supplementary group.
func (p Peer) InGroup(gid uint32) bool {
	return p.GID == gid || slices.Contains(p.Groups, gid)
}

// Authorizer decides whether a peer is served; a non-nil error refuses it and
// says why.
type Authorizer func(Peer) error

// AuthInfo carries the peer into request handlers through peer.FromContext.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Peer Peer
}

// AuthType names the mechanism.
func (AuthInfo) AuthType() string { return "peercred" }

// FromContext returns the authenticated peer of a request.
func FromContext(ctx context.Context) (Peer, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}, false
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return Peer{}, false
	}
	return ai.Peer, true
}

// ErrNotUnix is returned for a connection that is not a unix socket.
var ErrNotUnix = errors.New("peercred: not a unix socket connection")

// RefusalHook is told about every refused connection, for the decision log.
type RefusalHook func(p Peer, reason error)

type serverCreds struct {
	authorize Authorizer
	refused   RefusalHook
	log       *slog.Logger
}

// NewServerCredentials returns gRPC transport credentials that read the
// peer's credentials and serve it only if authorize allows. refused, if not
// nil, is called for each refusal.
func NewServerCredentials(authorize Authorizer, refused RefusalHook, log *slog.Logger) credentials.TransportCredentials {
	if log == nil {
		log = slog.Default()
	}
	return &serverCreds{authorize: authorize, refused: refused, log: log}
}

func (c *serverCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	p, err := Read(conn)
	if err != nil {
		c.log.Warn("refused connection", "reason", err.Error())
		return nil, nil, err
	}
	if err := c.authorize(p); err != nil {
		if c.refused != nil {
			c.refused(p, err)
		}
		return nil, nil, fmt.Errorf("peer uid %d refused: %w", p.UID, err)
	}
	return conn, AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, Peer: p}, nil
}

func (c *serverCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peercred: server credentials used by a client")
}

func (c *serverCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (c *serverCreds) Clone() credentials.TransportCredentials {
	clone := *c
	return &clone
}

func (c *serverCreds) OverrideServerName(string) error { return nil }

// Read returns the credentials of the process at the other end of conn.
func Read(conn net.Conn) (Peer, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return Peer{}, ErrNotUnix
	}
	if _, isUnix := conn.LocalAddr().(*net.UnixAddr); !isUnix {
		return Peer{}, ErrNotUnix
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peercred: %w", err)
	}
	var (
		p      Peer
		sysErr error
	)
	err = raw.Control(func(fd uintptr) {
		ucred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			sysErr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p = Peer{UID: ucred.Uid, GID: ucred.Gid, PID: ucred.Pid}
		p.Groups, sysErr = peerGroups(int(fd))
	})
	if err != nil {
		return Peer{}, fmt.Errorf("peercred: %w", err)
	}
	if sysErr != nil {
		return Peer{}, fmt.Errorf("peercred: %w", sysErr)
	}
	return p, nil
}
