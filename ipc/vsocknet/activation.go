package vsocknet

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// FileListener makes a listener of a passed AF_VSOCK socket (a systemd
// socket unit's ListenStream=vsock:…, taken by its FileDescriptorName= with
// unixsock.Activation.File), after checking that it is a listening vsock
// stream socket. go-systemd's activation.Listeners cannot be used: it goes
// through net.FileListener, which knows no AF_VSOCK. f stays the caller's
// to close.
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
