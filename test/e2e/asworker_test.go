package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/test/stack"
)

// workerClient returns a broker client whose every connection reaches the
// broker as the worker's account, as a compromised worker's would: the
// test's requests go through a relay process running as that account.
func workerClient(t testing.TB, s *stack.Stack) (brokerv1.BrokerServiceClient, *grpc.ClientConn) {
	t.Helper()
	sock := startRelay(t, s)
	conn, err := unixsock.Dial(sock, unixsock.DefaultLimits.MaxSendMsgSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return brokerv1.NewBrokerServiceClient(conn), conn
}

// startRelay starts test/cmd/peerrelay as the worker's account in front of
// the broker's socket and returns the relay's socket.
func startRelay(t testing.TB, s *stack.Stack) string {
	t.Helper()
	dir, err := stack.WorldReadableTempDir("nannyagent-relay-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, int(s.Worker.UID), int(s.Worker.GID)); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "relay.sock")
	cmd := exec.Command(filepath.Join(s.BinDir, stack.PeerRelay), "-listen", sock, "-target", s.BrokerSocket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.WorkerCred()}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("relay: %q %v", line, err)
	}
	return sock
}

// decisions parses the broker's decision log.
func decisions(t testing.TB, s *stack.Stack) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(s.BrokerProcess().Log(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "decision" {
			out = append(out, m)
		}
	}
	return out
}

// heldStreams is one raw HTTP/2 connection whose streams sent their
// headers and never their message, as a client that stalls would.
type heldStreams struct {
	conn net.Conn
	done chan struct{}
}

// holdStreams opens n streams to method on a new connection to sock.
func holdStreams(t testing.TB, sock, method string, n int) *heldStreams {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	var mu sync.Mutex
	write := func(f func() error) {
		mu.Lock()
		defer mu.Unlock()
		if err := f(); err != nil {
			t.Error(err)
		}
	}
	write(func() error { _, err := io.WriteString(conn, http2.ClientPreface); return err })
	write(func() error { return fr.WriteSettings() })
	h := &heldStreams{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
				write(func() error { return fr.WriteSettingsAck() })
			}
		}
	}()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := range n {
		hb.Reset()
		for _, hf := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "localhost"},
			{"content-type", "application/grpc"}, {"te", "trailers"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
		}
		write(func() error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true})
		})
	}
	return h
}

func (h *heldStreams) close() {
	h.conn.Close()
	<-h.done
}

// notifySocket listens where the broker sends sd_notify messages and
// records when each WATCHDOG=1 arrives.
type notifySocket struct {
	path  string
	mu    sync.Mutex
	pings []time.Time
	conn  *net.UnixConn
	done  chan struct{}
}

func listenNotify(t testing.TB) *notifySocket {
	t.Helper()
	dir, err := stack.WorldReadableTempDir("nannyagent-notify-")
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: filepath.Join(dir, "notify.sock"), done: make(chan struct{})}
	n.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(n.done)
		buf := make([]byte, 4096)
		for {
			k, err := n.conn.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:k]), "WATCHDOG=1") {
				n.mu.Lock()
				n.pings = append(n.pings, time.Now())
				n.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		n.conn.Close()
		<-n.done
		os.RemoveAll(dir)
	})
	return n
}

// since counts the pings after t0.
func (n *notifySocket) since(t0 time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, p := range n.pings {
		if p.After(t0) {
			c++
		}
	}
	return c
}

// waitPings waits up to limit for want pings after t0.
func (n *notifySocket) waitPings(t0 time.Time, want int, limit time.Duration) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n.since(t0) >= want {
			return true
		}
	}
	return false
}
