package unixsock

import (
	"net"
	"sync"
)

// LimitListener accepts at most n connections at once; further connections
// wait in the kernel's backlog. Unlike x/net's netutil, it hands out the
// *net.UnixConn itself (embedded), so peer credentials stay readable.
func LimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return &releasingConn{Conn: c, release: l.release}, nil
	}
	return &releasingUnixConn{UnixConn: uc, release: l.release}, nil
}

func (l *limitListener) release() { <-l.sem }

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type releasingUnixConn struct {
	*net.UnixConn
	once    sync.Once
	release func()
}

func (c *releasingUnixConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.release)
	return err
}

type releasingConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *releasingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
