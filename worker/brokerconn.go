package worker

import (
	"google.golang.org/grpc"

	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/peerauth"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
	"github.com/nannyai/nannyagent/worker/config"
)

// vsockReadBuffer matches the unix transport's: messages are small and the
// worker should idle small.
const vsockReadBuffer = 8 << 10

// dialBroker returns a lazy connection to the broker: on its unix socket,
// or, from a VM guest, over vsock (cfg.BrokerSocket is vsock://2:PORT)
// with mutual TLS: the worker proves its key and accepts only a broker key
// it pins.
func dialBroker(cfg *config.Config, vsockDial vsocknet.DialFunc) (*grpc.ClientConn, error) {
	if !vsocknet.IsAddr(cfg.BrokerSocket) {
		return unixsock.Dial(cfg.BrokerSocket, unixsock.DefaultLimits.MaxSendMsgSize)
	}
	addr, err := vsocknet.ParseAddr(cfg.BrokerSocket)
	if err != nil {
		return nil, &config.Error{Key: "broker_socket", Reason: err.Error()}
	}
	id, err := keypin.LoadIdentity(cfg.BrokerVsockKey, "nannyagent-worker")
	if err != nil {
		return nil, &config.Error{Key: "broker_vsock_key", Reason: err.Error()}
	}
	creds, err := peerauth.NewClientCredentials(id, cfg.BrokerKeyPins)
	if err != nil {
		return nil, &config.Error{Key: "broker_key_pins", Reason: err.Error()}
	}
	return vsocknet.DialGRPC(addr, creds, vsockDial,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(unixsock.DefaultLimits.MaxSendMsgSize)),
		grpc.WithReadBufferSize(vsockReadBuffer),
	)
}
