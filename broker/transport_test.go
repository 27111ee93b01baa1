package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/lastserved"
	"github.com/nannyai/nannyagent/ipc/peerauth"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
	"github.com/nannyai/nannyagent/policy"
	"github.com/nannyai/nannyagent/test/stack"
)

// This machine is a VM guest: AF_VSOCK exists but there is no loopback
// transport, and a connect to CID 2 would reach a real host. No test here
// dials any CID. The vsock path is driven over unix socket pairs whose
// server side reports a vsock peer address (cidListener); one real AF_VSOCK
// listener is served beside them to show it binds, serves and closes.

// probeChildEnv makes the test binary send one Probe to a unix socket and
// exit: run as another uid, it is a real peer of the wrong uid.
const probeChildEnv = "BROKER_TEST_PROBE_SOCKET"

func init() {
	sock := os.Getenv(probeChildEnv)
	if sock == "" {
		return
	}
	conn, err := unixsock.Dial(sock, 1<<20)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = brokerv1.NewBrokerServiceClient(conn).Probe(ctx, &brokerv1.ProbeRequest{})
		cancel()
		conn.Close()
	}
	if err != nil {
		fmt.Println("PROBE refused:", err)
		os.Exit(3)
	}
	fmt.Println("PROBE served")
	os.Exit(0)
}

// cidListener hands out unix connections that report a vsock peer with
// context id cid, as the kernel reports a guest at accept(2).
type cidListener struct {
	net.Listener
	cid uint32
}

// Addr is a vsock address, as a real vsock listener's: the broker tells
// its unix socket from its vsock ports by their addresses.
func (l cidListener) Addr() net.Addr { return vsocknet.PeerAddr(vsocknet.HostCID, 5101) }

func (l cidListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return vsockPeerConn{Conn: c, cid: l.cid}, nil
}

type vsockPeerConn struct {
	net.Conn
	cid uint32
}

func (c vsockPeerConn) RemoteAddr() net.Addr { return vsocknet.PeerAddr(c.cid, 40000+c.cid) }

func newIdentity(t *testing.T, dir, name string) *keypin.Identity {
	t.Helper()
	if _, err := keypin.Generate(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	id, err := keypin.LoadIdentity(filepath.Join(dir, name+".key"), name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type vsockFixture struct {
	dir      string
	policy   string
	srv      *Server
	log      *syncBuffer
	record   string
	unixSock string
	// guestSock[cid] is the unix path standing in for that guest's CID.
	guestSock map[uint32]string
	realPort  uint32
	broker    *keypin.Identity
	stop      func() error
}

func transportPolicy(guests ...string) string {
	return "version: 1\ntransport:\n  vsock_guests:\n" + strings.Join(guests, "")
}

func guestRule(id string, cid uint32, name string, keys ...*keypin.Identity) string {
	pins := make([]string, len(keys))
	for i, k := range keys {
		pins[i] = k.Pin
	}
	return fmt.Sprintf("    - {id: %s, cid: %d, name: %s, worker_keys: [%s]}\n", id, cid, name, strings.Join(pins, ", "))
}

// startVsockBroker serves one broker on a unix socket, on stand-in vsock
// listeners for CIDs 101, 102 and 103, and on a real AF_VSOCK port.
func startVsockBroker(t *testing.T, policyYAML string) *vsockFixture {
	t.Helper()
	dir, err := stack.WorldReadableTempDir("broker-vsock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &vsockFixture{dir: dir, policy: filepath.Join(dir, "policy.yaml"), log: &syncBuffer{},
		record: filepath.Join(dir, "served.json"), unixSock: filepath.Join(dir, "broker.sock"), guestSock: map[uint32]string{}}
	keyDir := t.TempDir()
	f.broker = newIdentity(t, keyDir, "broker")
	if err := os.WriteFile(f.policy, []byte(policyYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	f.srv, err = New(Config{
		Version:       "test",
		WorkerUser:    "root",
		LoadPolicy:    func() (*policy.Policy, error) { return policy.Load(policy.LoadOptions{}, f.policy) },
		Probe:         fakeProbeConfig(t),
		Limits:        unixsock.DefaultLimits,
		VsockIdentity: f.broker,
		ServedRecord:  f.record,
		Log:           slog.New(slog.NewJSONHandler(f.log, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var lns []net.Listener
	// The unix socket is open to every uid, so that only the credential
	// stands between a stranger and the broker.
	uln, err := unixsock.Listen(context.Background(), unixsock.ListenConfig{Path: f.unixSock, DirMode: 0o755, SocketMode: 0o666, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	lns = append(lns, unixsock.LimitListener(uln, unixsock.DefaultLimits.MaxConnections))
	for _, cid := range []uint32{101, 102, 103} {
		path := filepath.Join(dir, fmt.Sprintf("cid%d.sock", cid))
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		f.guestSock[cid] = path
		lns = append(lns, unixsock.LimitListener(cidListener{Listener: ln, cid: cid}, unixsock.DefaultLimits.MaxConnections))
	}
	real, err := vsocknet.Listen(0)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		t.Log("AF_VSOCK is not available here: the real vsock listener is left out")
	} else if err != nil {
		t.Fatal(err)
	} else {
		f.realPort, _ = vsocknet.Port(real)
		lns = append(lns, unixsock.LimitListener(real, unixsock.DefaultLimits.MaxConnections))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, lns...) }()
	var stopErr error
	stopped := false
	f.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	t.Cleanup(func() { _ = f.stop() })
	return f
}

// guestConn connects over the stand-in vsock listener of cid, through the
// worker's own client credential and dial path.
func (f *vsockFixture) guestConn(t *testing.T, cid uint32, key *keypin.Identity) *grpc.ClientConn {
	t.Helper()
	creds, err := peerauth.NewClientCredentials(key, []string{f.broker.Pin})
	if err != nil {
		t.Fatal(err)
	}
	path := f.guestSock[cid]
	dial := func(ctx context.Context, _ vsocknet.Addr) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	conn, err := vsocknet.DialGRPC(vsocknet.Addr{CID: vsocknet.HostCID, Port: 5101}, creds, dial)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// probeAsGuest sends a Probe as the guest of cid.
func (f *vsockFixture) probeAsGuest(t *testing.T, cid uint32, key *keypin.Identity) error {
	t.Helper()
	conn := f.guestConn(t, cid, key)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := brokerv1.NewBrokerServiceClient(conn).Probe(ctx, &brokerv1.ProbeRequest{}, grpc.WaitForReady(false))
	return err
}

// decisions returns the decision log lines.
func (f *vsockFixture) decisions(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(f.log.String(), "\n") {
		if !strings.Contains(l, `"msg":"decision"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// waitDecisions waits (at most 5 s) for a decision line after the first
// n that match accepts, and returns the lines after the first n.
func (f *vsockFixture) waitDecisions(t *testing.T, n int, match func(map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := since(f.decisions(t), n)
		for _, l := range lines {
			if match(l) {
				return lines
			}
		}
		if time.Now().After(deadline) {
			return lines
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// since returns the decision lines after the first n.
func since(all []map[string]any, n int) []map[string]any { return all[n:] }

func TestVsockPeersThroughTheBroker(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	keys := t.TempDir()
	workerA := newIdentity(t, keys, "worker-a")
	workerB := newIdentity(t, keys, "worker-b")
	stranger := newIdentity(t, keys, "stranger")
	f := startVsockBroker(t, transportPolicy(guestRule("vm-a", 101, "pve-worker", workerA), guestRule("vm-b", 102, "other-vm", workerB)))

	tests := []struct {
		name   string
		cid    uint32
		key    *keypin.Identity
		reason string // "" when served
	}{
		{"allowed CID and pinned key", 101, workerA, ""},
		{"second allowed guest", 102, workerB, ""},
		{"unknown CID", 103, workerA, "context id 103 is not a guest the policy's transport section allows"},
		{"right CID wrong key", 101, stranger, "key " + stranger.Pin + ` is not pinned for guest "pve-worker" (context id 101)`},
		{"key pinned for another CID", 102, workerA, "key " + workerA.Pin + ` is pinned for guest "pve-worker" (context id 101), not for context id 102`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.decisions(t))
			err := f.probeAsGuest(t, tc.cid, tc.key)
			lines := since(f.decisions(t), before)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("want served, got %v", err)
				}
				if len(lines) != 1 || lines[0]["rpc"] != "Probe" || lines[0]["decision"] != "allow" || lines[0]["transport"] != "vsock" ||
					lines[0]["peer_cid"] != float64(tc.cid) || lines[0]["peer_key"] != tc.key.Pin || lines[0]["peer_name"] == nil {
					t.Errorf("decision log %v", lines)
				}
				return
			}
			if err == nil {
				t.Fatal("a refused guest was served")
			}
			// The client may see the failed handshake before the broker
			// has written its refusal: wait for the line.
			lines = f.waitDecisions(t, before, func(l map[string]any) bool { return l["rpc"] == "connect" })
			// Refused in the handshake: one connect line with the CID and
			// the reason, and no request line (nothing was read).
			var refusals int
			for _, l := range lines {
				if l["rpc"] != "connect" {
					t.Errorf("a request reached the broker: %v", l)
					continue
				}
				refusals++
				if l["decision"] != "deny" || l["transport"] != "vsock" || l["peer_cid"] != float64(tc.cid) ||
					!strings.Contains(fmt.Sprint(l["reason"]), tc.reason) || l["policy_sha256"] == "" {
					t.Errorf("refusal line %v, want CID %d and reason %q", l, tc.cid, tc.reason)
				}
			}
			if refusals == 0 {
				t.Errorf("the refusal is not in the decision log:\n%s", f.log.String())
			}
		})
	}

	t.Run("unix peer of the wrong uid", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run a process as nobody")
		}
		nobody, err := stack.LookupIdentity("nobody")
		if err != nil {
			t.Skip("no nobody account: " + err.Error())
		}
		before := len(f.decisions(t))
		out, code := probeAsUID(t, f.dir, f.unixSock, nobody)
		if code != 3 || !strings.Contains(out, "PROBE refused") {
			t.Fatalf("nobody: exit %d, %s; want refused", code, out)
		}
		lines := f.waitDecisions(t, before, func(l map[string]any) bool { return l["rpc"] == "connect" })
		var found bool
		for _, l := range lines {
			if l["rpc"] != "connect" {
				t.Errorf("a request of nobody reached the broker: %v", l)
			}
			found = found || (l["transport"] == "unix" && l["peer_uid"] == float64(nobody.UID) && l["decision"] == "deny" &&
				strings.Contains(fmt.Sprint(l["reason"]), "neither root nor the worker account"))
		}
		if !found {
			t.Errorf("the refusal of uid %d is not logged: %v", nobody.UID, lines)
		}
	})

	t.Run("unix peer of the right uid on the same server", func(t *testing.T) {
		// From another process: a round trip of the broker's own process
		// is its liveness check (Alive) and stays out of the record.
		self := stack.Identity{Name: "self", UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
		if out, code := probeAsUID(t, f.dir, f.unixSock, self); code != 0 {
			t.Fatalf("this uid on the unix socket: exit %d, %s", code, out)
		}
		conn, err := unixsock.Dial(f.unixSock, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := brokerv1.NewBrokerServiceClient(conn).Probe(context.Background(), &brokerv1.ProbeRequest{}); err != nil {
			t.Fatalf("the broker's own process on the unix socket: %v", err)
		}
	})

	if err := f.stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	// The broker wrote when it last served each peer; refused peers are
	// not in it.
	rec, err := lastserved.Read(f.record)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]lastserved.Peer{}
	for _, p := range rec.Peers {
		seen[fmt.Sprintf("%s/%d/%d", p.Transport, p.CID, p.UID)] = p
	}
	if g := seen["vsock/101/0"]; g.Guest != "pve-worker" || g.Key != workerA.Pin || g.Requests != 1 || g.LastServed.IsZero() {
		t.Errorf("guest 101 in the record: %+v", g)
	}
	if u := seen[fmt.Sprintf("unix/0/%d", os.Geteuid())]; u.Requests != 1 {
		t.Errorf("unix uid %d in the record: %+v; want the other process's one request, not the broker's own", os.Geteuid(), u)
	}
	if _, ok := seen["vsock/103/0"]; ok || len(rec.Peers) != 3 {
		t.Errorf("record %+v: want 101, 102 and this uid on unix only", rec.Peers)
	}
	// The real vsock listener was served and is closed: its port binds
	// again.
	if f.realPort != 0 {
		ln, err := vsocknet.Listen(f.realPort)
		if err != nil {
			t.Fatalf("vsock port %d still bound after the broker stopped: %v", f.realPort, err)
		}
		ln.Close()
	}
}

// probeAsUID runs the test binary as id, sending one Probe to sock.
func probeAsUID(t *testing.T, dir, sock string, id stack.Identity) (string, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, "probe-*.test")
	if err != nil {
		t.Fatal(err)
	}
	bin := out.Name()
	if err := out.Chmod(0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
	cmd := exec.Command(bin)
	cmd.Env = []string{probeChildEnv + "=" + sock}
	if id.UID != uint32(os.Geteuid()) {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: []uint32{id.GID}}}
	}
	b, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(b), exit.ExitCode()
	}
	if err != nil {
		t.Fatalf("run as %s: %v", id.Name, err)
	}
	return string(b), 0
}

// A guest that passed the handshake meets the same bounds as a unix peer:
// the admission tap refuses a method outside the table before its message
// is read, and a request over the policy's limits is measured and refused
// before it is decoded. Both are logged with the guest's CID, name and key.
func TestVsockRequestsMeetTheBrokersBounds(t *testing.T) {
	keys := t.TempDir()
	worker := newIdentity(t, keys, "worker")
	f := startVsockBroker(t, transportPolicy(guestRule("vm-a", 101, "pve-worker", worker)))
	conn := f.guestConn(t, 101, worker)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	guestLine := func(t *testing.T, lines []map[string]any, rpc, reason string) {
		t.Helper()
		for _, l := range lines {
			if l["rpc"] == rpc && l["decision"] == "deny" && l["transport"] == "vsock" && l["peer_cid"] == float64(101) &&
				l["peer_name"] == "pve-worker" && l["peer_key"] == worker.Pin && strings.Contains(fmt.Sprint(l["reason"]), reason) {
				return
			}
		}
		t.Errorf("no deny line for %s naming guest 101 and %q: %v", rpc, reason, lines)
	}

	before := len(f.decisions(t))
	err := conn.Invoke(ctx, "/nannyagent.broker.v1.BrokerService/Shell", &brokerv1.ProbeRequest{}, &brokerv1.ProbeResponse{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a method outside the table: %v, want PermissionDenied", err)
	}
	guestLine(t, since(f.decisions(t), before), "unknown /nannyagent.broker.v1.BrokerService/Shell", reasonUnknownMethod)

	lim := policy.DefaultLimits()
	argv := make([]string, lim.ArgvCount+1)
	for i := range argv {
		argv[i] = "x"
	}
	argv[0] = "echo"
	before = len(f.decisions(t))
	resp, err := brokerv1.NewBrokerServiceClient(conn).RunCommand(ctx, &brokerv1.RunCommandRequest{Id: "c1", Stages: []*brokerv1.Stage{{Argv: argv}}})
	if err == nil && resp.GetDecision().GetAllowed() {
		t.Fatalf("a request over argv_count was run: %v", resp)
	}
	guestLine(t, since(f.decisions(t), before), "RunCommand", "too many arguments")
}

// Rotation: a new pin is added beside the old one and the old one removed
// by policy reloads, with no restart and no refused request for the
// rotating guest in between.
func TestVsockKeyRotationWithoutRestart(t *testing.T) {
	keys := t.TempDir()
	oldKey := newIdentity(t, keys, "old")
	newKey := newIdentity(t, keys, "new")
	f := startVsockBroker(t, transportPolicy(guestRule("vm-a", 101, "pve-worker", oldKey)))
	reload := func(keys ...*keypin.Identity) {
		t.Helper()
		if err := os.WriteFile(f.policy, []byte(transportPolicy(guestRule("vm-a", 101, "pve-worker", keys...))), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := f.srv.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name     string
		pins     []*keypin.Identity
		old, new bool
	}{
		{"before", nil, true, false},
		{"both pinned", []*keypin.Identity{oldKey, newKey}, true, true},
		{"old removed", []*keypin.Identity{newKey}, false, true},
	}
	for _, st := range steps {
		if st.pins != nil {
			reload(st.pins...)
		}
		for _, k := range []struct {
			id   *keypin.Identity
			want bool
		}{{oldKey, st.old}, {newKey, st.new}} {
			err := f.probeAsGuest(t, 101, k.id)
			if (err == nil) != k.want {
				t.Errorf("%s: key %s served=%v (%v), want %v", st.name, k.id.Pin[:16], err == nil, err, k.want)
			}
		}
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestServeNeedsAListener(t *testing.T) {
	b := startBroker(t, 0)
	srv, err := New(b.srv.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "no listener") {
		t.Errorf("Serve without listeners: %v", err)
	}
}

// Alive, the watchdog's round trip, dials the unix socket whatever order
// the listeners come in, and is neither activity nor a served peer; a
// broker serving vsock alone says it has no round trip to make.
func TestAliveDialsTheUnixSocket(t *testing.T) {
	keys := t.TempDir()
	worker := newIdentity(t, keys, "worker")
	f := startVsockBroker(t, transportPolicy(guestRule("vm-a", 101, "pve-worker", worker)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	for range 100 {
		if err = f.srv.Alive(ctx); err == nil || !strings.Contains(err.Error(), "not serving yet") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Alive beside vsock listeners: %v", err)
	}
	lines := f.decisions(t)
	if len(lines) == 0 || lines[len(lines)-1]["transport"] != "unix" || lines[len(lines)-1]["rpc"] != "Probe" {
		t.Errorf("Alive's round trip is not a unix Probe in the decision log: %v", lines)
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	if rec, err := lastserved.Read(f.record); err == nil && len(rec.Peers) != 0 {
		t.Errorf("Alive's round trip is in the served record: %+v", rec.Peers)
	}

	vsockOnly, err := New(f.srv.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "cid.sock"))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- vsockOnly.Serve(sctx, cidListener{Listener: ln, cid: 101}) }()
	for range 100 {
		if err = vsockOnly.Alive(ctx); err == nil || !strings.Contains(err.Error(), "not serving yet") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if serr := <-done; serr != nil {
		t.Errorf("serve: %v", serr)
	}
	if err == nil || !strings.Contains(err.Error(), "no unix socket served") {
		t.Errorf("Alive serving vsock alone: %v, want it to say there is no unix socket", err)
	}
}
