package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/peerauth"
	"github.com/nannyai/nannyagent/ipc/peercred"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
	"github.com/nannyai/nannyagent/worker/config"
)

// The worker in a guest dials vsock://2:PORT. No test may dial a context id
// (this machine is a guest: CID 2 is a real host), so the dialer is given
// a unix listener in the vsock listener's place, whose connections report a
// vsock peer to the server's credential.

type fakeBroker struct {
	brokerv1.UnimplementedBrokerServiceServer
}

func (fakeBroker) Probe(ctx context.Context, _ *brokerv1.ProbeRequest) (*brokerv1.ProbeResponse, error) {
	p, _ := peerauth.FromContext(ctx)
	return &brokerv1.ProbeResponse{BrokerVersion: "fake, served guest " + p.Guest}, nil
}

type guestListener struct {
	net.Listener
	cid uint32
}

type guestConn struct {
	net.Conn
	cid uint32
}

func (c guestConn) RemoteAddr() net.Addr { return vsocknet.PeerAddr(c.cid, 1234) }

func (l guestListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return guestConn{Conn: c, cid: l.cid}, nil
}

func genKey(t *testing.T, dir, name string) (string, *keypin.Identity) {
	t.Helper()
	base := filepath.Join(dir, name)
	if _, err := keypin.Generate(base); err != nil {
		t.Fatal(err)
	}
	id, err := keypin.LoadIdentity(base+".key", name)
	if err != nil {
		t.Fatal(err)
	}
	return base + ".key", id
}

// serveFakeBroker serves a broker stand-in with the broker's credential on
// a unix socket that stands for the host's vsock port, as guest cid.
func serveFakeBroker(t *testing.T, broker *keypin.Identity, cid uint32, workerPins ...string) (path string, refusals func() []string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "host-vsock.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var refused []string
	creds := peerauth.NewServerCredentials(peerauth.ServerConfig{
		Unix:     func(peercred.Peer) error { return errors.New("unix peers are not expected here") },
		Guests:   func() []peerauth.Guest { return []peerauth.Guest{{CID: cid, Name: "pve-worker", Pins: workerPins}} },
		Identity: broker,
		Refused: func(_ peerauth.Peer, reason error) {
			mu.Lock()
			defer mu.Unlock()
			refused = append(refused, reason.Error())
		},
	})
	srv := grpc.NewServer(grpc.Creds(creds))
	brokerv1.RegisterBrokerServiceServer(srv, fakeBroker{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(guestListener{Listener: ln, cid: cid}) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return path, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), refused...)
	}
}

// dialerTo returns a vsock dialer that connects to path instead, and
// records where the worker asked to go.
func dialerTo(path string, asked *[]vsocknet.Addr, mu *sync.Mutex) vsocknet.DialFunc {
	return func(ctx context.Context, a vsocknet.Addr) (net.Conn, error) {
		mu.Lock()
		*asked = append(*asked, a)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

func TestWorkerReachesAVsockBroker(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	keys := t.TempDir()
	_, broker := genKey(t, keys, "broker")
	_, impostor := genKey(t, keys, "impostor")
	workerKey, worker := genKey(t, keys, "worker")
	_, other := genKey(t, keys, "other")

	tests := []struct {
		name        string
		serverKey   *keypin.Identity
		pinnedOnSrv string
		want        string // "" reachable; else in the error
		wantRefusal string
	}{
		{"pinned both ways", broker, worker.Pin, "", ""},
		{"broker key not pinned by the worker", impostor, worker.Pin, "is not pinned", ""},
		// TLS 1.3 lets the client finish before the server judges its key:
		// the worker sees the connection fail, and the broker's log says why.
		{"worker key not pinned by the broker", broker, other.Pin, "Unavailable", "is not pinned for guest \"pve-worker\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, refusals := serveFakeBroker(t, tc.serverKey, 7, tc.pinnedOnSrv)
			cfg := testConfig(t, "--broker-socket", "vsock://2:5101", "--broker-vsock-key", workerKey, "--broker-key-pins", broker.Pin)
			var asked []vsocknet.Addr
			var mu sync.Mutex
			w, err := newWorker(cfg, "test", slog.New(slog.NewTextHandler(io.Discard, nil)), dialerTo(path, &asked, &mu))
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			st := w.brokerStatus(context.Background())
			mu.Lock()
			if len(asked) == 0 || asked[0] != (vsocknet.Addr{CID: 2, Port: 5101}) {
				t.Errorf("the worker dialed %v, want vsock://2:5101", asked)
			}
			mu.Unlock()
			if tc.want == "" {
				if !st.GetReachable() || st.GetProbe().GetBrokerVersion() != "fake, served guest pve-worker" {
					t.Fatalf("status %v, want the broker reached as guest pve-worker", st)
				}
				return
			}
			if st.GetReachable() || !strings.Contains(st.GetError(), tc.want) {
				t.Errorf("status %v, want unreachable with %q", st, tc.want)
			}
			if tc.wantRefusal != "" {
				r := refusals()
				if len(r) == 0 || !strings.Contains(r[0], tc.wantRefusal) {
					t.Errorf("broker refusals %v, want %q", r, tc.wantRefusal)
				}
			}
		})
	}
}

func TestVsockBrokerConfig(t *testing.T) {
	keys := t.TempDir()
	workerKey, _ := genKey(t, keys, "worker")
	_, broker := genKey(t, keys, "broker")
	load := func(extra ...string) (*config.Config, error) {
		args := append([]string{"--config", filepath.Join(keys, "none.yaml"), "--api-url", "http://127.0.0.1:9",
			"--state-dir", filepath.Join(keys, "state")}, extra...)
		return config.Load(args, func(string) string { return "" }, io.Discard)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--broker-socket", "vsock://2:5101", "--broker-vsock-key", workerKey}, "config broker_key_pins: a broker reached over vsock must be pinned"},
		{[]string{"--broker-socket", "vsock://2:5101", "--broker-key-pins", "sha256:12"}, "config broker_key_pins"},
		{[]string{"--broker-socket", "vsock://2:0", "--broker-key-pins", broker.Pin}, "config broker_socket"},
		{[]string{"--broker-socket", "vsock://2:5101", "--broker-key-pins", broker.Pin, "--broker-vsock-key", "rel.key"}, "config broker_vsock_key"},
		{[]string{"--broker-socket", "relative.sock"}, "config broker_socket"},
	} {
		if _, err := load(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	// Several pins, comma-separated or repeated, for a rotation of the
	// broker's key.
	cfg, err := load("--broker-socket", "vsock://2:5101", "--broker-key-pins", broker.Pin+", sha256:"+strings.ToUpper(broker.Pin[7:]),
		"--broker-key-pins", "sha256:"+strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.BrokerKeyPins) != 3 || cfg.BrokerKeyPins[1] != broker.Pin || cfg.BrokerKeyPins[2] != "sha256:"+strings.Repeat("0", 64) {
		t.Errorf("pins %v", cfg.BrokerKeyPins)
	}
	if cfg.BrokerVsockKey != config.DefaultVsockKey {
		t.Errorf("key default %q", cfg.BrokerVsockKey)
	}
	// A missing key is a clear error naming the key.
	cfg.BrokerVsockKey = filepath.Join(keys, "absent.key")
	if _, err := newWorker(cfg, "test", slog.New(slog.NewTextHandler(io.Discard, nil)), nil); err == nil || !strings.Contains(err.Error(), "config broker_vsock_key") {
		t.Errorf("missing key: %v", err)
	}
}
