// Command demo runs nannyagent on the built-in local stack: it builds the
// binaries, starts a fake NannyAPI on 127.0.0.1 with a scripted model, starts
// the broker and the worker as separate processes in a temporary runtime
// directory, registers the host, shows its status and runs a whole
// diagnosis, as an operator would.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nannyai/nannyagent/test/repo"

	"github.com/nannyai/nannyagent/test/fakeapi"
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
	step("building nannyagent, nannyagent-broker, nannyagent-worker")
	bin, err := stack.Build(ctx)
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)

	api := fakeapi.New(fakeapi.Options{AutoApprove: true, AI: fakeapi.DemoAI()})
	defer api.Close()
	step("fake NannyAPI with a scripted model at " + api.URL())

	policy, err := vendorPolicy()
	if err != nil {
		return err
	}
	s, err := stack.Start(ctx, stack.Options{BinDir: bin, Policy: policy, APIURL: api.URL(),
		ExtraWorkerArgs: []string{"--register-poll-interval", "200ms"}})
	if err != nil {
		return err
	}
	defer func() {
		if err := s.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stop:", err)
		}
	}()
	step(fmt.Sprintf("broker (uid %d) and worker (%s) running in %s", os.Geteuid(), s.Worker.Name, s.Dir))

	for _, cmd := range [][]string{
		{"register"},
		{"status"},
		{"diagnose", "The host feels slow and the load average looks high"},
	} {
		step("nannyagent " + cmd[0])
		res := s.CLI(ctx, nil, cmd...)
		fmt.Print(res.Stdout, res.Stderr)
		if res.Code != 0 {
			return fmt.Errorf("nannyagent %s exited %d", cmd[0], res.Code)
		}
	}
	step("the broker's decision log")
	fmt.Print(decisions(s.BrokerProcess().Log()))
	return nil
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

// vendorPolicy is the packaged default policy.
func vendorPolicy() (string, error) {
	root, err := repo.Root()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(root, "packaging", "policy.yaml"))
	return string(data), err
}

// decisions keeps the decision lines of the broker's log.
func decisions(log string) string {
	var b strings.Builder
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"msg":"decision"`) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
