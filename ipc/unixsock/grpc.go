package unixsock

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/grpc/keepalive"
)

// Limits are the gRPC limits a server enforces on every connection.
type Limits struct {
	MaxRecvMsgSize       int
	MaxSendMsgSize       int
	MaxConcurrentStreams uint32
	// MaxConnections bounds simultaneous connections (LimitListener).
	MaxConnections int
}

// readBufferSize is smaller than grpc's 32 KiB default: messages on these
// sockets are small and the agent should idle small.
const readBufferSize = 8 << 10

// DefaultLimits suit both servers: requests are small, except patch
// scripts, and there is one client process. The send limit (and thus
// what clients accept) covers the largest broker answer the policy's hard
// caps allow: a patch result with 64 MiB of stdout and 64 MiB of stderr.
// The broker takes its receive limit from its policy instead.
var DefaultLimits = Limits{
	MaxRecvMsgSize:       8 << 20,
	MaxSendMsgSize:       130 << 20,
	MaxConcurrentStreams: 64,
	MaxConnections:       16,
}

// Transport bounds every server sets. A stream's flow-control window is
// fixed at HTTP/2's 64 KiB (gRPC would otherwise grow it up to 16 MiB
// per stream): it is what a client can push on a stream before a handler
// asks for a message. Header lists are small on these sockets; gRPC's
// default would let one stream's headers take 16 MiB.
const (
	streamWindow      = 64 << 10
	maxHeaderListSize = 16 << 10
)

// ServerOptions returns the options every server uses: peer-credential
// transport, message and stream limits, and a keepalive policy that drops
// clients that ping too often.
func ServerOptions(creds credentials.TransportCredentials, l Limits, extra ...grpc.ServerOption) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(l.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(l.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.ConnectionTimeout(5 * time.Second),
		grpc.ReadBufferSize(readBufferSize),
		grpc.StaticStreamWindowSize(streamWindow),
		grpc.StaticConnWindowSize(streamWindow),
		grpc.MaxHeaderListSize(maxHeaderListSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    2 * time.Minute,
			Timeout: 20 * time.Second,
		}),
	}
	return append(opts, extra...)
}

// Dial returns a client connection to the gRPC server on the unix socket at
// path. It connects lazily, on the first call.
func Dial(path string, maxRecv int) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(local.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecv)),
		grpc.WithReadBufferSize(readBufferSize),
	)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", path, err)
	}
	return conn, nil
}
