package peerauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"

	"github.com/nannyai/nannyagent/ipc/keypin"
)

type clientCreds struct {
	id   *keypin.Identity
	pins []string
}

// NewClientCredentials returns the worker's credential for a broker
// reached over vsock: it proves the worker's key and accepts only a broker
// whose key has one of brokerPins.
func NewClientCredentials(id *keypin.Identity, brokerPins []string) (credentials.TransportCredentials, error) {
	if id == nil {
		return nil, errors.New("peerauth: the worker needs its own key")
	}
	if len(brokerPins) == 0 {
		return nil, errors.New("peerauth: no pin for the broker's key")
	}
	pins := make([]string, 0, len(brokerPins))
	for _, p := range brokerPins {
		canon, err := keypin.ParsePin(p)
		if err != nil {
			return nil, fmt.Errorf("peerauth: broker pin: %w", err)
		}
		pins = append(pins, canon)
	}
	return &clientCreds{id: id, pins: pins}, nil
}

func (c *clientCreds) ClientHandshake(ctx context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	var brokerPin string
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.id.Certificate},
		NextProtos:   []string{"h2"},
		// No name or chain to check: the broker's certificate is
		// self-signed and only carries its key, which VerifyConnection
		// judges against the pins (Go still checks the broker's
		// CertificateVerify signature, which proves it holds that key).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the broker presented no key")
			}
			pin, err := keypin.PinOfCertificate(cs.PeerCertificates[0].Raw)
			if err != nil {
				return err
			}
			if !slices.Contains(c.pins, pin) {
				return fmt.Errorf("the broker's key %s is not pinned (pinned: %s)", pin, strings.Join(c.pins, ", "))
			}
			brokerPin = pin
			return nil
		},
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("broker handshake: %w", err)
	}
	return tc, authInfo(Peer{Transport: Vsock, Key: brokerPin}), nil
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peerauth: client credentials used by a server")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peerauth"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	clone := *c
	clone.pins = slices.Clone(c.pins)
	return &clone
}

func (c *clientCreds) OverrideServerName(string) error { return nil }
