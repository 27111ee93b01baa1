package vsocknet

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// Activated are the listening sockets systemd passed, by family.
type Activated struct {
	Unix  []net.Listener
	Vsock []net.Listener
}

// All lists every listener, unix first.
func (a Activated) All() []net.Listener {
	return append(append([]net.Listener(nil), a.Unix...), a.Vsock...)
}

// Close closes every listener.
func (a Activated) Close() {
	for _, ln := range a.All() {
		ln.Close()
	}
}

// TakeActivated takes the sockets passed by systemd's socket activation
// (LISTEN_FDS) and returns them as listeners: unix and AF_VSOCK stream
// sockets that listen. go-systemd's activation.Listeners cannot be used: it
// goes through net.FileListener, which knows no AF_VSOCK and returns nil
// for it, so the fds are taken with activation.Files and each is judged by
// its own address family. Anything else (a datagram socket, a TCP port, a
// FIFO) is an error, and nothing is kept. No sockets is not an error.
func TakeActivated() (Activated, error) {
	files := activation.Files(true)
	defer func() {
		for _, f := range files {
			f.Close() // the listeners hold their own duplicates
		}
	}()
	var out Activated
	for _, f := range files {
		if err := out.add(f); err != nil {
			out.Close()
			return Activated{}, fmt.Errorf("socket activation: %s: %w", f.Name(), err)
		}
	}
	return out, nil
}

func (a *Activated) add(f *os.File) error {
	family, err := listeningFamily(f)
	if err != nil {
		return err
	}
	switch family {
	case unix.AF_UNIX:
		ln, err := net.FileListener(f)
		if err != nil {
			return err
		}
		a.Unix = append(a.Unix, ln)
	case unix.AF_VSOCK:
		ln, err := vsock.FileListener(f)
		if err != nil {
			return err
		}
		a.Vsock = append(a.Vsock, ln)
	case -1:
		return errors.New("only unix and vsock sockets are served")
	}
	return nil
}

// FileListener makes a listener of a passed AF_VSOCK socket (a systemd
// socket unit's ListenStream=vsock:…), after checking that it is a
// listening vsock stream socket. f stays the caller's to close.
func FileListener(f *os.File) (net.Listener, error) {
	family, err := listeningFamily(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if family != unix.AF_VSOCK {
		return nil, fmt.Errorf("%s: not an AF_VSOCK socket", f.Name())
	}
	ln, err := vsock.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return ln, nil
}

// listeningFamily checks that f is a listening stream socket and returns
// its address family.
func listeningFamily(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var family, typ, listening int
	var sysErr error
	err = rc.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			sysErr = fmt.Errorf("not a socket: %w", err)
			return
		}
		switch sa.(type) {
		case *unix.SockaddrUnix:
			family = unix.AF_UNIX
		case *unix.SockaddrVM:
			family = unix.AF_VSOCK
		default:
			family = -1
		}
		if typ, sysErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); sysErr != nil {
			return
		}
		listening, sysErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	})
	if err == nil {
		err = sysErr
	}
	switch {
	case err != nil:
		return 0, err
	case typ != unix.SOCK_STREAM:
		return 0, errors.New("not a stream socket (ListenStream= is required)")
	case listening != 1:
		return 0, errors.New("not listening (Accept=no is required)")
	}
	return family, nil
}
