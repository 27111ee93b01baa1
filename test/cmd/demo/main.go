// Command demo tells nannyagent's story on the local machine in under a
// minute: it creates a real problem in a temporary directory (a small
// filesystem filling up, and the runaway process filling it), starts a fake
// NannyAPI whose scripted model reads the evidence it is sent, starts the
// broker and the worker as separate processes, registers the host and runs
// `nannyagent diagnose`. The model asks for real commands (one of them, a
// read of an SSH private key, is denied with its rule) and a tracepoint
// trace (skipped, with the reason, where bpftrace or tracefs is missing),
// over two turns, and ends in a resolution that names what the demo
// created. Then it prints the broker's decision log for that diagnosis,
// formatted for a person.
//
// Usage: demo [-bin DIR] (DIR holds the built binaries, as `make build`
// leaves them in bin/; without it the demo builds them).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/repo"
	"github.com/nannyai/nannyagent/test/stack"
)

func main() {
	if os.Getenv(loggerEnv) != "" {
		runawayLogger(os.Getenv(loggerEnv))
		return
	}
	bin := flag.String("bin", "", "directory with the built binaries (default: build them)")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, *bin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, binArg string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	begun := time.Now()
	say := func(format string, a ...any) { fmt.Fprintf(out, "\n== "+format+"\n", a...) }

	bin, err := binaries(ctx, binArg)
	if err != nil {
		return err
	}
	defer os.RemoveAll(bin)

	say("the problem: a filesystem filling up, and the process filling it")
	p, err := createProblem(out)
	if err != nil {
		return err
	}
	defer p.cleanup()

	tracing := traceAvailability()
	if tracing != "" {
		fmt.Fprintf(out, "the model will not ask for a trace: %s\n", tracing)
	}
	model := &demoModel{problem: p, traces: tracing == ""}
	api := fakeapi.New(fakeapi.Options{AutoApprove: true, AI: fakeapi.AIFunc(model.turn)})
	defer api.Close()
	say("a fake NannyAPI at %s, its model scripted to follow the evidence", api.URL())

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
	say("the broker (uid %d, the packaged policy) and the worker (%s) run in %s", os.Geteuid(), s.Worker.Name, s.Dir)

	say("nannyagent register")
	if err := cli(ctx, s, out, "register"); err != nil {
		return err
	}
	issue := fmt.Sprintf("The disk under %s keeps filling up and writes start failing", p.mount)
	say("nannyagent diagnose -v %q", issue)
	diagnosed := time.Now()
	if err := cli(ctx, s, out, "diagnose", "-v", issue); err != nil {
		return err
	}
	say("what the broker decided for that diagnosis (its decision log)")
	fmt.Fprint(out, formatDecisions(s.BrokerProcess().Log(), diagnosed))
	say("done in %s", time.Since(begun).Round(100*time.Millisecond))
	return nil
}

// binaries copies the built binaries into a directory the worker's account
// can read, or builds them there.
func binaries(ctx context.Context, from string) (string, error) {
	if from == "" {
		fmt.Println("== building nannyagent, nannyagent-broker, nannyagent-worker")
		return stack.Build(ctx)
	}
	dir, err := stack.WorldReadableTempDir("nannyagent-demo-bin-")
	if err != nil {
		return "", err
	}
	for _, name := range []string{stack.CLI, stack.Broker, stack.Worker} {
		if err := copyFile(filepath.Join(from, name), filepath.Join(dir, name)); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("%w (run make build first)", err)
		}
	}
	return dir, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	outf, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(outf, in); err != nil {
		outf.Close()
		return err
	}
	return outf.Close()
}

func cli(ctx context.Context, s *stack.Stack, out io.Writer, args ...string) error {
	res := s.CLI(ctx, nil, args...)
	fmt.Fprint(out, res.Stdout, res.Stderr)
	if res.Code != 0 {
		return fmt.Errorf("nannyagent %s exited %d", args[0], res.Code)
	}
	return nil
}

// traceAvailability says why a trace cannot run here, or "".
func traceAvailability() string {
	if os.Geteuid() != 0 {
		return "the demo is not running as root, so the broker cannot load eBPF programs"
	}
	if _, err := os.Stat("/usr/bin/bpftrace"); err != nil {
		return "bpftrace is not installed (apt-get install bpftrace)"
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/syscalls"); err != nil {
		return "tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)"
	}
	return ""
}

// vendorPolicy is the packaged default policy.
func vendorPolicy() (string, error) {
	root, err := repo.Root()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(root, "packaging", "policy.yaml"))
	return string(data), err
}

// loggerEnv makes the demo binary run as the runaway logger.
const loggerEnv = "NANNYAGENT_DEMO_LOGGER"

// runawayLogger appends a line to path every 2 ms until it is killed,
// whether or not the writes still fit.
func runawayLogger(path string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		os.Exit(1)
	}
	line := []byte(strings.Repeat("x", 100) + " request served\n")
	for {
		_, _ = f.Write(line)
		time.Sleep(2 * time.Millisecond)
	}
}

// startLogger runs a copy of this binary named runaway-logger, so the
// process shows under that name in ps, lsof and traces.
func startLogger(dir, logPath string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	exe := filepath.Join(dir, "runaway-logger")
	if err := copyFile(self, exe); err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{loggerEnv + "=" + logPath}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, cmd.Start()
}
