// Package peerauth is the broker's one gRPC transport credential, for both
// of its transports. A unix-socket peer is judged by the credentials the
// kernel recorded at connect(2) (SO_PEERCRED, through ipc/peercred). A
// vsock peer has no uid, and its context id (CID) names a machine, not a
// process: it is served only if the host-assigned CID is one the policy
// allows, and it then proves, by mutual TLS 1.3, the private key whose pin
// the policy lists for that CID, while it checks the broker's key against
// its own pins. Every refusal happens in the handshake, before a request is
// read, and is reported with the peer and the reason.
package peerauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/peercred"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
)

// Transport names how a peer reached the broker.
type Transport string

// Transports.
const (
	Unix  Transport = "unix"
	Vsock Transport = "vsock"
)

// Peer is who connected.
type Peer struct {
	Transport Transport
	// Unix is the kernel's record of a unix-socket peer.
	Unix peercred.Peer
	// CID is a vsock peer's context id, as the host's kernel reported it.
	CID uint32
	// Guest is the policy's name for that CID ("" when it has none).
	Guest string
	// Key is the pin of the key a vsock peer presented ("" before it
	// presented one).
	Key string
}

// Guest is one VM guest allowed over vsock: its context id, the name the
// decision log uses, and the pins of the keys it may prove (several during
// a rotation).
type Guest struct {
	CID  uint32
	Name string
	Pins []string
}

// ServerConfig configures the broker's credential.
type ServerConfig struct {
	// Unix decides whether a unix-socket peer is served.
	Unix peercred.Authorizer
	// Guests returns the guests allowed now; it is called at every vsock
	// handshake, so a policy reload takes effect for the next connection.
	Guests func() []Guest
	// Identity is the broker's own key. Without it every vsock peer is
	// refused.
	Identity *keypin.Identity
	// HandshakeTimeout bounds a vsock peer's TLS handshake (10 s if zero).
	HandshakeTimeout time.Duration
	// Refused is told about every refused connection, for the decision log.
	Refused func(p Peer, reason error)
	// Log receives what cannot go to Refused.
	Log *slog.Logger
}

// AuthInfo carries the peer into request handlers through peer.FromContext.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Peer Peer
}

// AuthType names the mechanism.
func (AuthInfo) AuthType() string { return "peerauth" }

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

// ErrRefused wraps every refusal.
var ErrRefused = errors.New("peer refused")

type serverCreds struct {
	cfg ServerConfig
}

// NewServerCredentials returns the broker's transport credential.
func NewServerCredentials(cfg ServerConfig) credentials.TransportCredentials {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Guests == nil {
		cfg.Guests = func() []Guest { return nil }
	}
	return &serverCreds{cfg: cfg}
}

func (c *serverCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if cid, ok := vsocknet.PeerCID(conn); ok {
		return c.vsockHandshake(conn, cid)
	}
	return c.unixHandshake(conn)
}

func (c *serverCreds) unixHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	up, err := peercred.Read(conn)
	p := Peer{Transport: Unix, Unix: up}
	if err != nil {
		return nil, nil, c.refuse(p, err)
	}
	if err := c.cfg.Unix(up); err != nil {
		return nil, nil, c.refuse(p, err)
	}
	return conn, authInfo(p), nil
}

func (c *serverCreds) vsockHandshake(conn net.Conn, cid uint32) (net.Conn, credentials.AuthInfo, error) {
	p := Peer{Transport: Vsock, CID: cid}
	guests := c.cfg.Guests()
	i := slices.IndexFunc(guests, func(g Guest) bool { return g.CID == cid })
	if i < 0 {
		// Refused before any TLS work: an unknown guest costs one accept.
		return nil, nil, c.refuse(p, fmt.Errorf("context id %d is not a guest the policy's transport section allows", cid))
	}
	g := guests[i]
	p.Guest = g.Name
	if c.cfg.Identity == nil {
		return nil, nil, c.refuse(p, errors.New("the broker has no vsock key to prove (see nannyagent-broker keygen)"))
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.cfg.Identity.Certificate},
		// The peer's certificate is self-signed and only carries its key;
		// the key is judged against the pins below. Go still checks the
		// peer's CertificateVerify signature, which proves it holds the
		// private key.
		ClientAuth: tls.RequireAnyClientCert,
		NextProtos: []string{"h2"},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("the guest presented no key")
			}
			pin, err := keypin.PinOfCertificate(raw[0])
			if err != nil {
				return err
			}
			p.Key = pin
			return judgeKey(g, guests, pin)
		},
	}
	tc := tls.Server(conn, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, c.refuse(p, fmt.Errorf("TLS handshake: %w", err))
	}
	return tc, authInfo(p), nil
}

// judgeKey says why a key that guest g presented is refused, or nil.
func judgeKey(g Guest, all []Guest, pin string) error {
	if slices.Contains(g.Pins, pin) {
		return nil
	}
	for _, other := range all {
		if other.CID != g.CID && slices.Contains(other.Pins, pin) {
			return fmt.Errorf("key %s is pinned for guest %q (context id %d), not for context id %d", pin, other.Name, other.CID, g.CID)
		}
	}
	return fmt.Errorf("key %s is not pinned for guest %q (context id %d)", pin, g.Name, g.CID)
}

func (c *serverCreds) refuse(p Peer, reason error) error {
	if c.cfg.Refused != nil {
		c.cfg.Refused(p, reason)
	} else {
		c.cfg.Log.Warn("refused connection", "transport", string(p.Transport), "reason", reason.Error())
	}
	return fmt.Errorf("%w: %w", ErrRefused, reason)
}

func authInfo(p Peer) AuthInfo {
	return AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, Peer: p}
}

func (c *serverCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peerauth: server credentials used by a client")
}

func (c *serverCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peerauth"}
}

func (c *serverCreds) Clone() credentials.TransportCredentials {
	clone := *c
	return &clone
}

func (c *serverCreds) OverrideServerName(string) error { return nil }
