package peerauth

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/peercred"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
)

// vsockConn is a unix socket conn that reports a vsock peer: a guest has
// no loopback transport, so the vsock path is driven over a socket pair.
type vsockConn struct {
	net.Conn
	cid uint32
}

func (c vsockConn) RemoteAddr() net.Addr { return vsocknet.PeerAddr(c.cid, 50000) }

func socketPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func identity(t testing.TB, name string) *keypin.Identity {
	t.Helper()
	base := filepath.Join(t.TempDir(), name)
	if _, err := keypin.Generate(base); err != nil {
		t.Fatal(err)
	}
	id, err := keypin.LoadIdentity(base+".key", name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type refusal struct {
	peer   Peer
	reason error
}

type refusals struct {
	mu   sync.Mutex
	list []refusal
}

func (r *refusals) add(p Peer, reason error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, refusal{p, reason})
}

func (r *refusals) all() []refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]refusal(nil), r.list...)
}

// handshake runs both sides over a socket pair whose server end reports
// context id cid.
func handshake(t testing.TB, server *serverCreds, cid uint32, client *keypin.Identity, brokerPins []string) (srvPeer Peer, srvErr, cliErr error) {
	t.Helper()
	sc, cc := socketPair(t)
	creds, err := NewClientCredentials(client, brokerPins)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, _, err := creds.ClientHandshake(ctx, "broker", cc)
		cliErr = err
		if err == nil {
			// In TLS 1.3 the server judges the client's key after the
			// client has finished: the refusal shows on the first read.
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, cliErr = conn.Read(make([]byte, 1))
		}
	}()
	conn, info, err := server.ServerHandshake(vsockConn{Conn: sc, cid: cid})
	if err == nil {
		srvPeer = info.(AuthInfo).Peer
		_, _ = conn.Write([]byte{1}) // served: the client reads this byte
		<-done
		conn.Close()
		return srvPeer, nil, cliErr
	}
	sc.Close()
	<-done
	return srvPeer, err, cliErr
}

func TestVsockHandshake(t *testing.T) {
	broker := identity(t, "broker")
	workerA := identity(t, "worker-a")
	workerA2 := identity(t, "worker-a-next")
	workerB := identity(t, "worker-b")
	stranger := identity(t, "stranger")
	guests := []Guest{
		{CID: 101, Name: "vm-a", Pins: []string{workerA.Pin, workerA2.Pin}},
		{CID: 102, Name: "vm-b", Pins: []string{workerB.Pin}},
	}
	tests := []struct {
		name       string
		cid        uint32
		client     *keypin.Identity
		brokerPins []string
		noKey      bool
		want       string // "" served; else in the refusal reason
		clientWant string
	}{
		{name: "allowed CID and pinned key", cid: 101, client: workerA},
		{name: "second pinned key (rotation)", cid: 101, client: workerA2},
		{name: "other allowed guest", cid: 102, client: workerB},
		{name: "unknown CID", cid: 103, client: workerA, want: "context id 103 is not a guest", clientWant: ""},
		{name: "right CID wrong key", cid: 101, client: stranger, want: "is not pinned for guest \"vm-a\" (context id 101)", clientWant: "bad certificate"},
		{name: "key pinned for another CID", cid: 102, client: workerA, want: "is pinned for guest \"vm-a\" (context id 101), not for context id 102", clientWant: "bad certificate"},
		{name: "broker without a key", cid: 101, client: workerA, noKey: true, want: "the broker has no vsock key", clientWant: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var refused refusals
			cfg := ServerConfig{Guests: func() []Guest { return guests }, Identity: broker, Refused: refused.add,
				Unix: func(peercred.Peer) error { return errors.New("unix must not be consulted") }}
			if tc.noKey {
				cfg.Identity = nil
			}
			pins := tc.brokerPins
			if pins == nil {
				pins = []string{broker.Pin}
			}
			p, srvErr, cliErr := handshake(t, NewServerCredentials(cfg).(*serverCreds), tc.cid, tc.client, pins)
			got := refused.all()
			if tc.want == "" {
				if srvErr != nil || cliErr != nil || len(got) != 0 {
					t.Fatalf("want served: server %v, client %v, refusals %v", srvErr, cliErr, got)
				}
				if p.Transport != Vsock || p.CID != tc.cid || p.Key != tc.client.Pin || p.Guest == "" {
					t.Errorf("peer %+v", p)
				}
				return
			}
			if !errors.Is(srvErr, ErrRefused) || !strings.Contains(srvErr.Error(), tc.want) {
				t.Errorf("server: %v, want a refusal containing %q", srvErr, tc.want)
			}
			if len(got) != 1 || got[0].peer.CID != tc.cid || got[0].peer.Transport != Vsock || !strings.Contains(got[0].reason.Error(), tc.want) {
				t.Fatalf("refusal not reported once with the CID and reason: %+v", got)
			}
			if strings.Contains(tc.want, "pinned") && got[0].peer.Key != tc.client.Pin {
				t.Errorf("the refusal names key %q, want the presented %q", got[0].peer.Key, tc.client.Pin)
			}
			if cliErr == nil || !strings.Contains(cliErr.Error(), tc.clientWant) {
				t.Errorf("client: %v, want an error containing %q", cliErr, tc.clientWant)
			}
		})
	}
}

func TestWorkerRefusesAnUnpinnedBroker(t *testing.T) {
	broker := identity(t, "broker")
	impostor := identity(t, "impostor")
	worker := identity(t, "worker")
	var refused refusals
	cfg := ServerConfig{Guests: func() []Guest { return []Guest{{CID: 101, Name: "vm", Pins: []string{worker.Pin}}} },
		Identity: impostor, Refused: refused.add}
	_, srvErr, cliErr := handshake(t, NewServerCredentials(cfg).(*serverCreds), 101, worker, []string{broker.Pin})
	if cliErr == nil || !strings.Contains(cliErr.Error(), "the broker's key "+impostor.Pin+" is not pinned") {
		t.Errorf("client: %v, want the impostor's key refused", cliErr)
	}
	if srvErr == nil {
		t.Error("the server completed a handshake the worker refused")
	}
}

func TestUnixHandshake(t *testing.T) {
	for _, allow := range []bool{true, false} {
		var refused refusals
		cfg := ServerConfig{Refused: refused.add, Unix: func(p peercred.Peer) error {
			if p.PID != int32(os.Getpid()) {
				return errors.New("not this process")
			}
			if !allow {
				return errors.New("uid not served")
			}
			return nil
		}}
		sc, _ := socketPair(t)
		conn, info, err := NewServerCredentials(cfg).ServerHandshake(sc)
		if allow {
			if err != nil || conn != sc || info.(AuthInfo).Peer.Transport != Unix || info.(AuthInfo).Peer.Unix.UID != uint32(os.Getuid()) {
				t.Errorf("allowed unix peer: %v %+v", err, info)
			}
			continue
		}
		got := refused.all()
		if !errors.Is(err, ErrRefused) || len(got) != 1 || got[0].peer.Transport != Unix || got[0].peer.Unix.PID != int32(os.Getpid()) {
			t.Errorf("refused unix peer: %v %+v", err, got)
		}
	}
	// A connection that is neither unix nor vsock is refused.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var refused refusals
	if _, _, err := NewServerCredentials(ServerConfig{Refused: refused.add, Unix: func(peercred.Peer) error { return nil }}).ServerHandshake(a); !errors.Is(err, peercred.ErrNotUnix) || len(refused.all()) != 1 {
		t.Errorf("a pipe: %v, want ErrNotUnix reported", err)
	}
}

func TestClientCredentialsNeedPins(t *testing.T) {
	id := identity(t, "w")
	if _, err := NewClientCredentials(id, nil); err == nil {
		t.Error("no broker pin accepted")
	}
	if _, err := NewClientCredentials(id, []string{"sha256:nope"}); err == nil {
		t.Error("a malformed broker pin accepted")
	}
	if _, err := NewClientCredentials(nil, []string{id.Pin}); err == nil {
		t.Error("no worker key accepted")
	}
}
