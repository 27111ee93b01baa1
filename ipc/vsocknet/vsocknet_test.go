package vsocknet

import (
	"errors"
	"net"
	"os"
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
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	if _, err := FileListener(fileOf(t, udp)); err == nil || !strings.Contains(err.Error(), "not a stream socket") {
		t.Errorf("a datagram socket: %v", err)
	}
	// A vsock socket bound but not listening (a unit with Accept=yes
	// hands over connections, not the listener).
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	idle := os.NewFile(uintptr(fd), "vsock")
	defer idle.Close()
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: unix.VMADDR_PORT_ANY}); err != nil {
		t.Fatal(err)
	}
	if _, err := FileListener(idle); err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Errorf("a vsock socket not listening: %v", err)
	}
}
