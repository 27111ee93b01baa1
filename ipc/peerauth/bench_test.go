package peerauth

import (
	"testing"

	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/peercred"
)

// BenchmarkVsockHandshake measures one mutual TLS 1.3 handshake with pin
// checks on both sides (the cost a guest pays per connection), and the
// refusal of an unknown CID (the cost any other guest can make the broker
// pay). Each iteration includes making a unix socket pair and the client's
// side.
func BenchmarkVsockHandshake(b *testing.B) {
	broker := identity(b, "broker")
	worker := identity(b, "worker")
	guests := []Guest{{CID: 101, Name: "vm", Pins: []string{worker.Pin}}}
	srv := NewServerCredentials(ServerConfig{Guests: func() []Guest { return guests }, Identity: broker,
		Refused: func(Peer, error) {}, Unix: func(peercred.Peer) error { return nil }}).(*serverCreds)
	for _, bc := range []struct {
		name string
		cid  uint32
		key  *keypin.Identity
	}{{"pinned", 101, worker}, {"unknown-cid", 103, worker}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				_, srvErr, _ := handshake(b, srv, bc.cid, bc.key, []string{broker.Pin})
				if (srvErr == nil) != (bc.cid == 101) {
					b.Fatalf("cid %d: %v", bc.cid, srvErr)
				}
			}
		})
	}
}
