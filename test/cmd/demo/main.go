// Command demo runs nannyagent on the built-in local stack: it builds the
// binaries, starts the broker and the worker as separate processes in a
// temporary runtime directory, and shows what an operator would see.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nannyai/nannyagent/test/stack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fmt.Println("== building nannyagent, nannyagent-broker, nannyagent-worker")
	bin, err := stack.Build(ctx)
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)

	policy, err := vendorPolicy()
	if err != nil {
		return err
	}
	s, err := stack.Start(ctx, stack.Options{BinDir: bin, Policy: policy})
	if err != nil {
		return err
	}
	defer func() {
		if err := s.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stop:", err)
		}
	}()
	fmt.Printf("== broker (uid %d) and worker (%s) running in %s\n", os.Geteuid(), s.Worker.Name, s.Dir)

	fmt.Println("== nannyagent status")
	res := s.CLI(ctx, nil, "status")
	fmt.Print(res.Stdout, res.Stderr)
	if res.Code != 0 {
		return fmt.Errorf("nannyagent status exited %d", res.Code)
	}
	return nil
}

// vendorPolicy is the packaged default policy when it exists.
func vendorPolicy() (string, error) {
	root, err := stack.RepoRoot()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(root, "packaging", "policy.yaml"))
	if os.IsNotExist(err) {
		return "version: 1\n", nil
	}
	return string(data), err
}
