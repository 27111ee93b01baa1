package broker

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/nannyai/nannyagent/ipc/lastserved"
	"github.com/nannyai/nannyagent/ipc/peerauth"
)

// defaultServedEvery is how often the served record is written when it
// changed: `nannyagent status` on the host is at most this far behind.
const defaultServedEvery = 30 * time.Second

// transportCredentials is the one credential both kinds of listener use:
// SO_PEERCRED for unix peers, CID + mutual TLS with pinned keys for vsock
// peers, each refusal written to the decision log.
func (s *Server) transportCredentials() credentials.TransportCredentials {
	return peerauth.NewServerCredentials(peerauth.ServerConfig{
		Unix:     s.authorize,
		Guests:   s.vsockGuests,
		Identity: s.cfg.VsockIdentity,
		Refused:  s.dlog.refusedConnection,
		Log:      s.log,
	})
}

// vsockGuests are the guests the policy in force allows; read at every
// vsock handshake, so a reload adds or removes a pin for the next one.
func (s *Server) vsockGuests() []peerauth.Guest {
	t := s.policies.current().policy.Transport()
	out := make([]peerauth.Guest, 0, len(t.VsockGuests))
	for _, g := range t.VsockGuests {
		out = append(out, peerauth.Guest{CID: g.CID, Name: g.Name, Pins: g.WorkerKeys})
	}
	return out
}

// peerAttrs are the decision log's fields naming a peer.
func peerAttrs(p peerauth.Peer) []any {
	if p.Transport == peerauth.Vsock {
		attrs := []any{"transport", string(p.Transport), "peer_cid", p.CID}
		if p.Guest != "" {
			attrs = append(attrs, "peer_name", p.Guest)
		}
		if p.Key != "" {
			attrs = append(attrs, "peer_key", p.Key)
		}
		return attrs
	}
	return []any{"transport", string(peerauth.Unix), "peer_uid", p.Unix.UID, "peer_gid", p.Unix.GID, "peer_pid", p.Unix.PID}
}

// unixAddr is the address of the first unix listener in lns, or "": the
// socket Alive dials.
func unixAddr(lns []net.Listener) string {
	for _, ln := range lns {
		if ln.Addr().Network() == "unix" {
			return ln.Addr().String()
		}
	}
	return ""
}

// ownRoundTrip reports whether p is this process itself, over the unix
// socket: the liveness round trip of Alive, which is not activity. A vsock
// peer never is.
func ownRoundTrip(p peerauth.Peer) bool {
	return p.Transport == peerauth.Unix && int(p.Unix.PID) == os.Getpid()
}

// served notes a request in the served record.
func (s *Server) served(p peerauth.Peer, rpc string) {
	rec := lastserved.Peer{Transport: lastserved.TransportUnix, UID: p.Unix.UID}
	if p.Transport == peerauth.Vsock {
		rec = lastserved.Peer{Transport: lastserved.TransportVsock, CID: p.CID, Guest: p.Guest, Key: p.Key}
	}
	s.servedRecord.Served(rec, rpc)
}

// newServedRecord opens the served record; a corrupt one is replaced and
// said so.
func (s *Server) newServedRecord() {
	tr, err := lastserved.NewTracker(s.cfg.ServedRecord)
	if err != nil {
		s.log.Warn("the served record was unreadable and is started afresh", "path", s.cfg.ServedRecord, "error", err.Error())
	}
	s.servedRecord = tr
}

// keepServedRecord writes the served record while ctx lasts and once more
// at the end.
func (s *Server) keepServedRecord(ctx context.Context, wg *sync.WaitGroup) {
	every := s.cfg.ServedRecordEvery
	if every <= 0 {
		every = defaultServedEvery
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		var last string
		s.servedRecord.Run(ctx, every, func(err error) {
			// Retried every interval; said once per distinct error.
			if err.Error() != last {
				last = err.Error()
				s.log.Warn("cannot write the served record", "error", last)
			}
		})
	}()
}

// serveAll serves every listener with the one gRPC server: the same
// credential, limits, request table and decision log for each. A listener
// that fails is reported on the channel; the goroutines end when the gRPC
// server stops.
func (s *Server) serveAll(lns []net.Listener, wg *sync.WaitGroup) <-chan error {
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.grpc.Serve(ln); err != nil {
				errc <- fmt.Errorf("%s listener %s: %w", ln.Addr().Network(), ln.Addr(), err)
			}
		}()
	}
	return errc
}

// VsockGuests lists the guests the policy in force allows over vsock.
func (s *Server) VsockGuests() []peerauth.Guest { return s.vsockGuests() }
