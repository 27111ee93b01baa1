package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Activation holds the sockets handed to this process by socket activation
// (systemd, or systemd-socket-activate): LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES. A process reads them once, with [Passed].
type Activation struct {
	files []*os.File
}

// Passed takes the sockets passed to this process, if any, and clears the
// activation environment so the programs this process starts do not
// inherit it. Call it once, early.
func Passed() *Activation {
	return &Activation{files: activation.Files(true)}
}

// Unix takes the listening unix stream socket passed under name (the socket
// unit's FileDescriptorName=, systemd-socket-activate's --fdname). When the
// sockets were passed without names (LISTEN_FDNAMES unset, as
// systemd-socket-activate does without --fdname), it takes the only unix
// stream socket among them. It returns nil and no error when there is none.
//
// The socket file's mode is the first of the two checks every peer passes
// (SO_PEERCRED in the handshake is the second), so Unix refuses a socket
// that is not a listening unix stream socket, an abstract socket (no file,
// so no mode guards it), and a socket file that every account may write:
// systemd's SocketMode= defaults to 0666.
func (a *Activation) Unix(name string) (*net.UnixListener, error) {
	idx, err := a.find(func(f *os.File) bool { return f.Name() == name }, name)
	if err == nil && idx < 0 && a.unnamed() {
		idx, err = a.find(func(*os.File) bool { return true }, "an unnamed socket")
	}
	if err != nil || idx < 0 {
		return nil, err
	}
	f := a.files[idx]
	a.files[idx] = nil
	defer f.Close() // FileListener holds its own descriptor
	if err := checkPassed(f); err != nil {
		return nil, fmt.Errorf("socket activation: %q: %w", name, err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("socket activation: %q: %w", name, err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("socket activation: %q is a %s listener, not unix", name, ln.Addr().Network())
	}
	return ul, nil
}

// File takes the descriptor passed under name, whatever its address
// family, for a caller that makes its own listener of it and checks it
// (net.FileListener knows no AF_VSOCK: see ipc/vsocknet.FileListener). Only
// a descriptor named exactly name is taken, never an unnamed one. It
// returns nil and no error when there is none, and an error when more than
// one was passed under name. The caller closes the file.
func (a *Activation) File(name string) (*os.File, error) {
	idx := -1
	for i, f := range a.files {
		if f == nil || f.Name() != name {
			continue
		}
		if idx >= 0 {
			return nil, fmt.Errorf("socket activation: more than one socket passed as %q", name)
		}
		idx = i
	}
	if idx < 0 {
		return nil, nil
	}
	f := a.files[idx]
	a.files[idx] = nil
	return f, nil
}

// find returns the index of the one unix stream socket that match accepts,
// or -1.
func (a *Activation) find(match func(*os.File) bool, what string) (int, error) {
	idx := -1
	for i, f := range a.files {
		if f == nil || !match(f) {
			continue
		}
		ok, err := isUnixStream(f)
		if err != nil {
			return -1, fmt.Errorf("socket activation: %s: %w", f.Name(), err)
		}
		if !ok {
			continue
		}
		if idx >= 0 {
			return -1, fmt.Errorf("socket activation: more than one unix socket passed as %s", what)
		}
		idx = i
	}
	return idx, nil
}

// unnamed reports whether every socket left has the name go-systemd gives
// when LISTEN_FDNAMES names none.
func (a *Activation) unnamed() bool {
	for _, f := range a.files {
		if f != nil && !strings.HasPrefix(f.Name(), "LISTEN_FD_") {
			return false
		}
	}
	return true
}

// Close closes the sockets nobody took and names them in its error: a
// socket passed under a name this program does not serve is a unit that
// does not match the program.
func (a *Activation) Close() error {
	var left []string
	for i, f := range a.files {
		if f == nil {
			continue
		}
		left = append(left, f.Name())
		f.Close()
		a.files[i] = nil
	}
	if len(left) > 0 {
		return fmt.Errorf("socket activation passed sockets this program does not use: %s (check FileDescriptorName=)", strings.Join(left, ", "))
	}
	return nil
}

// isUnixStream reports whether f is an AF_UNIX SOCK_STREAM socket. A
// descriptor that is not a socket at all is an error.
func isUnixStream(f *os.File) (bool, error) {
	var domain, typ int
	err := control(f, func(fd int) error {
		var err error
		if domain, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
			return fmt.Errorf("not a socket: %w", err)
		}
		if typ, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
			return fmt.Errorf("socket type: %w", err)
		}
		return nil
	})
	return err == nil && domain == unix.AF_UNIX && typ == unix.SOCK_STREAM, err
}

// checkPassed checks that f listens, on a file in the filesystem whose mode
// does not let every account connect.
func checkPassed(f *os.File) error {
	var path string
	err := control(f, func(fd int) error {
		listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			return fmt.Errorf("socket state: %w", err)
		}
		if listening != 1 {
			return errors.New("the socket is not listening (a socket unit with Accept=yes?)")
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return fmt.Errorf("socket address: %w", err)
		}
		if ua, ok := sa.(*unix.SockaddrUnix); ok {
			path = ua.Name
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case path == "":
		return errors.New("the socket has no address")
	case path[0] == '@':
		return fmt.Errorf("abstract socket %s: no file mode guards it; use a path in ListenStream=", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("socket file: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s is not a socket file", path)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return fmt.Errorf("every account may connect to %s (mode %04o): set SocketMode=0660 in the socket unit", path, fi.Mode().Perm())
	}
	return nil
}

// control runs fn on f's descriptor without switching it to blocking mode
// (as f.Fd would): the descriptor's file description is shared with the
// listener made from it.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var inner error
	if err := rc.Control(func(fd uintptr) { inner = fn(int(fd)) }); err != nil {
		return err
	}
	return inner
}
