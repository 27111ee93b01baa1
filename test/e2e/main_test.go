// Package e2e runs the real binaries as separate processes on real unix
// sockets and real uids, and checks what an operator or an attacker would
// see.
package e2e

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/stack"
)

// binDir holds the binaries built once for the package.
var binDir string

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	dir, err := stack.Build(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startStack starts broker and worker and stops them at the end of the
// test, failing it if either does not exit cleanly.
func startStack(t *testing.T, opts stack.Options) *stack.Stack {
	t.Helper()
	opts.BinDir = binDir
	s, err := stack.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs processes as other uids")
	}
}

// cred runs a process as an existing account with the given supplementary
// groups.
func cred(t *testing.T, account string, groups ...uint32) *syscall.Credential {
	t.Helper()
	id, err := stack.LookupIdentity(account)
	if err != nil {
		t.Skipf("account %s does not exist here: %v", account, err)
	}
	return &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: groups, NoSetGroups: false}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
