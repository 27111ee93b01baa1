package vsocknet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// This machine is itself a VM guest: AF_VSOCK exists, binding works, and a
// connect to CID 2 would reach a real host. No test here dials any CID.

func listenOrSkip(t *testing.T, port uint32) net.Listener {
	t.Helper()
	ln, err := Listen(port)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skip("AF_VSOCK is not available on this kernel")
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestListenBindsARealPortAndClosesCleanly(t *testing.T) {
	ln := listenOrSkip(t, 0)
	port, ok := Port(ln)
	if !ok || port == 0 || port == unix.VMADDR_PORT_ANY {
		t.Fatalf("listener %v: want a concrete vsock port", ln.Addr())
	}
	if !strings.Contains(ln.Addr().String(), ":"+strconv.FormatUint(uint64(port), 10)) {
		t.Errorf("address %q does not name port %d", ln.Addr(), port)
	}
	// While bound, the port is taken.
	if ln2, err := Listen(port); err == nil {
		ln2.Close()
		t.Fatalf("a second listener bound port %d while the first held it", port)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()
	if err := ln.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-accepted:
		if err == nil {
			t.Error("Accept returned a connection after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	// Closed means the port is free again.
	ln3, err := Listen(port)
	if err != nil {
		t.Fatalf("port %d still taken after Close: %v", port, err)
	}
	ln3.Close()
}

func TestParseAddr(t *testing.T) {
	good := map[string]Addr{
		"vsock://2:5101":          {CID: 2, Port: 5101},
		"vsock://101:1":           {CID: 101, Port: 1},
		"vsock://1:5101":          {CID: 1, Port: 5101},
		"vsock://4294967294:5101": {CID: 4294967294, Port: 5101},
	}
	for s, want := range good {
		got, err := ParseAddr(s)
		if err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %v, %v; want %v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("String() = %q, want %q", got.String(), s)
		}
	}
	bad := map[string]string{
		"/run/x.sock":             "not a vsock address",
		"vsock://2":               "want vsock://CID:PORT",
		"vsock://:5101":           "not a decimal number",
		"vsock://2:":              "not a decimal number",
		"vsock://0:5101":          "does not name a peer",
		"vsock://4294967295:5101": "does not name a peer",
		"vsock://2:0":             "not a concrete port",
		"vsock://2:4294967295":    "not a concrete port",
		"vsock://2:4294967296":    "out of range",
		"vsock://+2:5101":         "not a decimal number",
		"vsock://0x2:5101":        "not a decimal number",
		"vsock://2:5101:7":        "not a decimal number",
		"vsock:// 2:5101":         "not a decimal number",
		"VSOCK://2:5101":          "not a vsock address",
	}
	for s, want := range bad {
		if _, err := ParseAddr(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseAddr(%q): %v, want %q", s, err, want)
		}
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"vsock://2:5101", "vsock://4294967295:1", "vsock://2:", "vsock://a:b", "unix:///x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			return
		}
		if back, err := ParseAddr(a.String()); err != nil || back != a {
			t.Fatalf("%q parsed to %v, which does not round-trip: %v %v", s, a, back, err)
		}
	})
}

func TestPeerCID(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := PeerCID(a); ok {
		t.Error("a pipe reported a vsock peer")
	}
	wrapped := addrConn{Conn: a, remote: PeerAddr(77, 1024)}
	if cid, ok := PeerCID(wrapped); !ok || cid != 77 {
		t.Errorf("PeerCID = %d, %v; want 77", cid, ok)
	}
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// activationChildEnv makes the test binary act as a socket-activated
// process: TestActivationChild takes the passed sockets and reports them.
const activationChildEnv = "VSOCKNET_ACTIVATION_CHILD"

type activationReport struct {
	Unix, Vsock []string
	Err         string
}

// TestActivationChild runs only in the child started by
// runActivated; it claims the passed fds as systemd would hand them.
func TestActivationChild(t *testing.T) {
	if os.Getenv(activationChildEnv) == "" {
		t.Skip("helper for TestTakeActivated")
	}
	// systemd sets LISTEN_PID to the service's pid; the parent cannot know
	// it before exec, so the child claims the fds itself.
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	act, err := TakeActivated()
	var r activationReport
	if err != nil {
		r.Err = err.Error()
	}
	for _, ln := range act.Unix {
		r.Unix = append(r.Unix, ln.Addr().String())
	}
	for _, ln := range act.Vsock {
		port, _ := Port(ln)
		r.Vsock = append(r.Vsock, strconv.FormatUint(uint64(port), 10))
	}
	act.Close()
	if os.Getenv("LISTEN_FDS") != "" {
		r.Err += "; LISTEN_FDS left in the environment"
	}
	out, _ := json.Marshal(r)
	fmt.Println("REPORT " + string(out))
}

func runActivated(t *testing.T, files ...*os.File) activationReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestActivationChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), activationChildEnv+"=1", "LISTEN_FDS="+strconv.Itoa(len(files)))
	cmd.ExtraFiles = files
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "REPORT "); ok {
			var r activationReport
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatalf("child printed no report:\n%s", out)
	return activationReport{}
}

func fileOf(t *testing.T, ln interface{ File() (*os.File, error) }) *os.File {
	t.Helper()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// vsockFile binds a real AF_VSOCK listening socket and returns it as a file,
// as systemd would pass it.
func vsockFile(t *testing.T) (*os.File, uint32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skip("AF_VSOCK is not available on this kernel")
	}
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "vsock")
	t.Cleanup(func() { f.Close() })
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: unix.VMADDR_PORT_ANY}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return f, sa.(*unix.SockaddrVM).Port
}

func TestTakeActivated(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "b.sock")
	uln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	vf, port := vsockFile(t)

	r := runActivated(t, fileOf(t, uln), vf)
	if r.Err != "" || len(r.Unix) != 1 || r.Unix[0] != sock || len(r.Vsock) != 1 || r.Vsock[0] != strconv.FormatUint(uint64(port), 10) {
		t.Errorf("unix + vsock: report %+v, want unix %s and vsock port %d", r, sock, port)
	}

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	if r := runActivated(t, vf, fileOf(t, udp)); !strings.Contains(r.Err, "not a stream socket") || len(r.Vsock) != 0 {
		t.Errorf("a datagram socket: report %+v, want a refusal and nothing kept", r)
	}
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if r := runActivated(t, fileOf(t, tcp)); !strings.Contains(r.Err, "only unix and vsock") {
		t.Errorf("a TCP socket: report %+v, want a refusal", r)
	}
	if r := runActivated(t); r.Err != "" || len(r.Unix)+len(r.Vsock) != 0 {
		t.Errorf("no sockets: report %+v, want nothing and no error", r)
	}
}

func TestFileListener(t *testing.T) {
	vf, port := vsockFile(t)
	ln, err := FileListener(vf)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := Port(ln); !ok || got != port {
		t.Errorf("listener on port %d (%v), want %d", got, ok, port)
	}
	ln.Close()
	uln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "u.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	if _, err := FileListener(fileOf(t, uln)); err == nil || !strings.Contains(err.Error(), "not an AF_VSOCK socket") {
		t.Errorf("a unix socket: %v", err)
	}
}
