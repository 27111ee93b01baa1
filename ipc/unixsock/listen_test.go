package unixsock

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestListenCreatesLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "broker", "broker.sock")
	ln, err := Listen(context.Background(), ListenConfig{Path: path, DirMode: 0o750, SocketMode: 0o660, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := os.Stat(filepath.Dir(path))
	sock, _ := os.Lstat(path)
	if dir.Mode().Perm() != 0o750 || sock.Mode().Perm() != 0o660 || sock.Mode().Type() != os.ModeSocket {
		t.Errorf("dir %v socket %v, want 0750 and a 0660 socket", dir.Mode(), sock.Mode())
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Error("closing the listener must remove the socket it created")
	}
}

func TestListenRefusals(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, "live.sock")
	liveLn, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer liveLn.Close()
	tests := []struct {
		name, path, want string
	}{
		{"regular file", plain, "is not a socket"},
		{"live socket", live, "a live server already answers"},
		{"relative path", "rel.sock", "must be absolute"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Listen(context.Background(), ListenConfig{Path: tc.path, DirMode: 0o755, SocketMode: 0o660, GID: -1})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep" {
		t.Error("the regular file was replaced")
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen(context.Background(), ListenConfig{Path: path, DirMode: 0o755, SocketMode: 0o600, GID: -1})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
}

func TestLimitListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.sock")
	raw, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(raw, 1)
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	c1, _ := net.Dial("unix", path)
	c2, _ := net.Dial("unix", path)
	defer c1.Close()
	defer c2.Close()
	first := <-accepted
	// Peer credentials are read through syscall.Conn: the limiter must
	// not hide it.
	if _, ok := first.(syscall.Conn); !ok {
		t.Errorf("limited conn %T does not expose syscall.Conn", first)
	}
	select {
	case <-accepted:
		t.Fatal("a second connection was accepted while the limit is 1")
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("closing a connection did not free its slot")
	}
	ln.Close()
	wg.Wait()
}
