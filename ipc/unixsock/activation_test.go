package unixsock

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// passedListener makes a listening unix socket with the given file mode
// and returns it as the *os.File a socket-activated process would get.
func passedListener(t *testing.T, name string, mode os.FileMode) (*os.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return renamed(t, f, name), path
}

// renamed returns f's descriptor under another name (the name socket
// activation gives it), closing f.
func renamed(t *testing.T, f *os.File, name string) *os.File {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), name)
}

// rawSocket makes a unix socket of the given type, bound to path (or to an
// abstract name when path starts with @), not listening.
func rawSocket(t *testing.T, name string, typ int, path string) *os.File {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), name)
}

func TestActivationTakesNamedUnixListener(t *testing.T) {
	f, path := passedListener(t, "worker", 0o660)
	other, _ := passedListener(t, "broker", 0o660)
	a := &Activation{files: []*os.File{other, f}}
	ln, err := a.Unix("worker")
	if err != nil || ln == nil {
		t.Fatalf("Unix(worker) = %v, %v", ln, err)
	}
	defer ln.Close()
	if ln.Addr().String() != path {
		t.Errorf("took %s, want %s", ln.Addr(), path)
	}
	go func() {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept on the passed socket: %v", err)
	}
	c.Close()
	if again, err := a.Unix("worker"); again != nil || err != nil {
		t.Errorf("a socket was taken twice: %v, %v", again, err)
	}
	// The broker's socket was passed but not taken: Close says so.
	if err := a.Close(); err == nil || !strings.Contains(err.Error(), "broker") {
		t.Errorf("Close = %v, want it to name the socket nobody took", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestActivationUnnamed(t *testing.T) {
	// systemd-socket-activate without --fdname sets no LISTEN_FDNAMES:
	// go-systemd names the descriptors LISTEN_FD_<n>.
	f, path := passedListener(t, "LISTEN_FD_3", 0o660)
	a := &Activation{files: []*os.File{f}}
	ln, err := a.Unix("broker")
	if err != nil || ln == nil {
		t.Fatalf("the one unnamed socket was not taken: %v, %v", ln, err)
	}
	if ln.Addr().String() != path {
		t.Errorf("took %s, want %s", ln.Addr(), path)
	}
	ln.Close()

	one, _ := passedListener(t, "LISTEN_FD_3", 0o660)
	two, _ := passedListener(t, "LISTEN_FD_4", 0o660)
	a = &Activation{files: []*os.File{one, two}}
	defer a.Close()
	if ln, err := a.Unix("broker"); err == nil || !strings.Contains(err.Error(), "more than one") {
		t.Errorf("two unnamed sockets: %v, %v; want a refusal", ln, err)
	}
}

func TestActivationNothingPassed(t *testing.T) {
	a := &Activation{}
	if ln, err := a.Unix("worker"); ln != nil || err != nil {
		t.Errorf("Unix on nothing = %v, %v", ln, err)
	}
	if err := a.Close(); err != nil {
		t.Error(err)
	}
}

func TestActivationRefusals(t *testing.T) {
	dir := t.TempDir()
	regular, err := os.Create(filepath.Join(dir, "plain"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		file func(t *testing.T) []*os.File
		want string
	}{
		{"world-writable socket file", func(t *testing.T) []*os.File {
			f, _ := passedListener(t, "worker", 0o666)
			return []*os.File{f}
		}, "every account may connect"},
		{"not listening", func(t *testing.T) []*os.File {
			return []*os.File{rawSocket(t, "worker", unix.SOCK_STREAM, filepath.Join(t.TempDir(), "b.sock"))}
		}, "not listening"},
		{"abstract", func(t *testing.T) []*os.File {
			f := rawSocket(t, "worker", unix.SOCK_STREAM, "@nannyagent-test-"+strconv.Itoa(os.Getpid()))
			if err := unix.Listen(int(f.Fd()), 1); err != nil {
				t.Fatal(err)
			}
			return []*os.File{f}
		}, "abstract socket"},
		{"not a socket", func(t *testing.T) []*os.File {
			return []*os.File{renamed(t, regular, "worker")}
		}, "not a socket"},
		{"two sockets under one name", func(t *testing.T) []*os.File {
			a, _ := passedListener(t, "worker", 0o660)
			b, _ := passedListener(t, "worker", 0o660)
			return []*os.File{a, b}
		}, "more than one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := &Activation{files: tc.file(t)}
			defer a.Close()
			ln, err := a.Unix("worker")
			if ln != nil {
				ln.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Unix = %v, %v; want error %q", ln, err, tc.want)
			}
		})
	}
}

func TestActivationFileByName(t *testing.T) {
	// The broker's vsock socket comes as a descriptor named "vsock"; File
	// hands it over whatever its family (here a datagram socket stands in:
	// judging it is the caller's job).
	dgram := rawSocket(t, "vsock", unix.SOCK_DGRAM, filepath.Join(t.TempDir(), "d.sock"))
	ul, _ := passedListener(t, "broker", 0o660)
	unnamed, _ := passedListener(t, "LISTEN_FD_5", 0o660)
	a := &Activation{files: []*os.File{ul, dgram, unnamed}}
	f, err := a.File("vsock")
	if err != nil || f != dgram {
		t.Fatalf("File(vsock) = %v, %v; want the descriptor passed as vsock", f, err)
	}
	f.Close()
	if f, err := a.File("vsock"); f != nil || err != nil {
		t.Errorf("a descriptor was taken twice: %v, %v", f, err)
	}
	if f, err := a.File("other"); f != nil || err != nil {
		t.Errorf("File(other) = %v, %v; want nothing (an unnamed socket is not taken by File)", f, err)
	}
	ln, err := a.Unix("broker")
	if err != nil || ln == nil {
		t.Fatalf("Unix(broker) after File = %v, %v", ln, err)
	}
	ln.Close()
	if err := a.Close(); err == nil || !strings.Contains(err.Error(), "LISTEN_FD_5") {
		t.Errorf("Close = %v, want it to name the socket nobody took", err)
	}

	one, _ := passedListener(t, "vsock", 0o660)
	two, _ := passedListener(t, "vsock", 0o660)
	a = &Activation{files: []*os.File{one, two}}
	defer a.Close()
	if f, err := a.File("vsock"); f != nil || err == nil || !strings.Contains(err.Error(), "more than one") {
		t.Errorf("two sockets named vsock: %v, %v; want a refusal", f, err)
	}
}

func TestActivationSkipsOtherSocketTypes(t *testing.T) {
	// A datagram socket under the same name is not the stream socket asked
	// for (a unit may pass several kinds under one name); it stays for
	// Close to report.
	dgram := rawSocket(t, "worker", unix.SOCK_DGRAM, filepath.Join(t.TempDir(), "d.sock"))
	a := &Activation{files: []*os.File{dgram}}
	if ln, err := a.Unix("worker"); ln != nil || err != nil {
		t.Errorf("Unix = %v, %v; want nothing", ln, err)
	}
	if err := a.Close(); err == nil {
		t.Error("Close did not report the datagram socket")
	}
}

// TestPassedFromEnvironment hands a socket to a child process the way
// systemd does (fd 3, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID) and checks
// that the child serves on it and that its children would not inherit the
// activation environment.
func TestPassedFromEnvironment(t *testing.T) {
	if os.Getenv("UNIXSOCK_ACTIVATION_CHILD") == "1" {
		activationChild()
		return
	}
	f, path := passedListener(t, "worker.sock", 0o660)
	cmd := exec.Command(os.Args[0], "-test.run=^TestPassedFromEnvironment$")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), "UNIXSOCK_ACTIVATION_CHILD=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=worker.sock")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer cmd.Wait()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "serving" {
		t.Fatalf("child: %q", lines.Text())
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the passed socket: %v", err)
	}
	c.Close()
	if !lines.Scan() || lines.Text() != "accepted env=" {
		t.Errorf("child after accept: %q (want the activation environment cleared)", lines.Text())
	}
}

// activationChild is the socket-activated side of TestPassedFromEnvironment.
// systemd sets LISTEN_PID to the pid it execs; the child sets it itself.
func activationChild() {
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	a := Passed()
	ln, err := a.Unix("worker.sock")
	if err != nil || ln == nil {
		os.Stdout.WriteString("no socket: " + errString(err) + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("serving\n")
	c, err := ln.Accept()
	if err != nil {
		os.Exit(1)
	}
	c.Close()
	os.Stdout.WriteString("accepted env=" + os.Getenv("LISTEN_FDS") + os.Getenv("LISTEN_PID") + os.Getenv("LISTEN_FDNAMES") + "\n")
	os.Exit(0)
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}
