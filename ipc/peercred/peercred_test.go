package peercred

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc/credentials"
)

func socketPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func TestReadReportsThisProcess(t *testing.T) {
	server, _ := socketPair(t)
	p, err := Read(server)
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != uint32(os.Getuid()) || p.GID != uint32(os.Getgid()) || p.PID != int32(os.Getpid()) {
		t.Errorf("peer %+v, want uid %d gid %d pid %d", p, os.Getuid(), os.Getgid(), os.Getpid())
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if !slices.Contains(p.Groups, uint32(g)) {
			t.Errorf("supplementary group %d missing from %v", g, p.Groups)
		}
	}
}

func TestReadRefusesOtherConnections(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := Read(a); !errors.Is(err, ErrNotUnix) {
		t.Errorf("pipe: err %v, want ErrNotUnix", err)
	}
}

func TestInGroup(t *testing.T) {
	p := Peer{GID: 10, Groups: []uint32{20, 30}}
	for gid, want := range map[uint32]bool{10: true, 20: true, 30: true, 40: false} {
		if got := p.InGroup(gid); got != want {
			t.Errorf("InGroup(%d) = %v, want %v", gid, got, want)
		}
	}
}

func TestHandshakeAuthorizes(t *testing.T) {
	tests := []struct {
		name      string
		authorize Authorizer
		wantErr   bool
	}{
		{"allowed", func(Peer) error { return nil }, false},
		{"refused", func(Peer) error { return errors.New("not you") }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, _ := socketPair(t)
			var refusedCalls int
			creds := NewServerCredentials(tc.authorize, func(Peer, error) { refusedCalls++ }, nil)
			conn, info, err := creds.ServerHandshake(server)
			if tc.wantErr {
				if err == nil || refusedCalls != 1 || conn != nil {
					t.Fatalf("want refusal reported once, got err %v, refused %d", err, refusedCalls)
				}
				return
			}
			if err != nil || conn != server {
				t.Fatalf("handshake: %v", err)
			}
			ai := info.(AuthInfo)
			if ai.SecurityLevel != credentials.PrivacyAndIntegrity || ai.Peer.PID != int32(os.Getpid()) {
				t.Errorf("auth info %+v", ai)
			}
		})
	}
}

func TestFromContextWithoutPeer(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Error("a context without a peer must not yield one")
	}
}

func TestDecodeGroups(t *testing.T) {
	if got := decodeGroups([]byte{1, 0, 0, 0, 2, 0, 0, 0, 9}); !slices.Equal(got, []uint32{1, 2}) {
		t.Errorf("decodeGroups = %v (a trailing partial entry must be dropped)", got)
	}
}
