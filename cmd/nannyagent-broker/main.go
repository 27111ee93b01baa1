// Command nannyagent-broker is the root half of nannyagent. It serves the
// worker's account on a unix socket (handed over by systemd, or created at
// --socket) and, where the worker runs in a VM guest, the guests its policy
// allows on an AF_VSOCK port; it performs only what its policy files allow.
// `nannyagent-broker keygen` and `pin` make and name the vsock key pairs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/nannyai/nannyagent/broker"
	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/broker/patch"
	"github.com/nannyai/nannyagent/broker/probe"
	"github.com/nannyai/nannyagent/cmd/internal/service"
	"github.com/nannyai/nannyagent/ipc/lastserved"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/policy"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type options struct {
	socket       string
	socketGroup  string
	vsockPort    uint
	vsockKey     string
	servedRecord string
	workerUser   string
	policyFile   string
	policyDir    string
	stateDir     string
	patchUnits   string
	idleExit     time.Duration
	ownCgroup    string
	readTimeout  time.Duration
	logLevel     string
	logFormat    string
	landlock     string
	showVersion  bool
}

func main() {
	// A run's subreaper is this binary re-executed; it must branch off
	// before anything else starts.
	if execute.IsHelper() {
		execute.HelperMain()
	}
	// The hidden patch-run subcommand carries out one patch run in its
	// own unit or container (see broker/patch).
	if patch.IsRunner(os.Args[1:]) {
		os.Exit(patch.RunnerMain(os.Args[2:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

// subcommands are the broker binary's tools; without one it serves.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"keygen": runKeygen,
	"pin":    runPin,
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("nannyagent-broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socket, "socket", "/run/nannyagent-broker/broker.sock", "socket path when not socket-activated (empty: no unix socket)")
	fs.UintVar(&o.vsockPort, "vsock-port", 0, "also listen on this AF_VSOCK port when not socket-activated (0: no vsock)")
	fs.StringVar(&o.vsockKey, "vsock-key", "/etc/nannyagent/vsock/broker.key", "the broker's private key for vsock peers (nannyagent-broker keygen)")
	fs.StringVar(&o.servedRecord, "served-record", lastserved.DefaultPath, "where to record when each peer was last served (empty: nowhere)")
	fs.StringVar(&o.socketGroup, "socket-group", "nannyagent", "group owning the socket and its directory")
	fs.StringVar(&o.workerUser, "worker-user", "nannyagent", "the only non-root account served")
	fs.StringVar(&o.policyFile, "policy", "/usr/share/nannyagent/policy.yaml", "vendor policy file")
	fs.StringVar(&o.policyDir, "policy-dir", "/etc/nannyagent/policy.d", "directory of local policy files (*.yaml)")
	fs.StringVar(&o.stateDir, "state-dir", broker.DefaultStateDir, "the broker's own state directory (0700 root): patch runs and their results, the loop guard's record of the last host reboot")
	fs.StringVar(&o.patchUnits, "patch-units", "auto", "run patches in transient systemd units that outlive the broker: auto (when systemd is PID 1) or never (children of the broker)")
	fs.DurationVar(&o.idleExit, "idle-exit", 2*time.Second, "exit after this long without requests when socket-activated (0: never); shorter than the worker's metrics interval, so an idle host keeps no broker (make footprint)")
	fs.DurationVar(&o.readTimeout, "read-timeout", 10*time.Second, "longest wait for a request's message once its headers arrived")
	fs.StringVar(&o.ownCgroup, "own-cgroup", "auto", "move into a leaf cgroup of its own, where its memory ceiling is set: auto (when systemd delegated the cgroup, Delegate=yes), always or never")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&o.landlock, "landlock", "auto", "confine every run with Landlock where the kernel has it (auto), or never (off: for tests of the policy's option tables alone)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix("NANNYAGENT_BROKER"))
	return o, err
}

// maxProcs bounds the broker's parallelism: commands and traces run in child
// processes; the broker only pipes and parses their output.
const maxProcs = 2

func run(args []string, stderr io.Writer) int {
	service.LimitProcs(maxProcs)
	if len(args) > 0 && subcommands[args[0]] != nil {
		return subcommands[args[0]](args[1:], os.Stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "nannyagent-broker:", err)
		return 1
	}
	if o.landlock != "auto" && o.landlock != "off" {
		fmt.Fprintf(stderr, "nannyagent-broker: --landlock %q is not auto or off\n", o.landlock)
		return 1
	}
	if o.showVersion {
		fmt.Fprintln(os.Stdout, "nannyagent-broker", version)
		return 0
	}
	log, err := service.NewLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent-broker:", err)
		return 1
	}
	if err := serve(o, log); err != nil {
		log.Error("broker stopped", "error", err.Error())
		return 1
	}
	log.Info("broker stopped")
	return 0
}

func serve(o options, log *slog.Logger) error {
	ctx, hup, stop := service.SignalContext(context.Background())
	defer stop()

	loadOpts := policy.LoadOptions{RequireRootOwned: os.Geteuid() == 0, WorkerAccount: o.workerUser}
	if !loadOpts.RequireRootOwned {
		log.Warn("not running as root: policy file ownership is not enforced and nothing privileged can run")
	}
	own, err := ownCgroup(o.ownCgroup)
	if err != nil {
		return err
	}
	lns, err := listen(ctx, o)
	if err != nil {
		return err
	}
	if err := watchdogNeedsUnix(lns); err != nil {
		lns.close()
		return err
	}
	vsockID, err := vsockIdentity(o, lns, log)
	if err != nil {
		lns.close()
		return err
	}
	cfg := broker.Config{
		Version:    version,
		WorkerUser: o.workerUser,
		LoadPolicy: func() (*policy.Policy, error) {
			return policy.LoadInstalled(loadOpts, o.policyFile, o.policyDir)
		},
		Probe:         probe.DefaultConfig(),
		Limits:        unixsock.DefaultLimits,
		VsockIdentity: vsockID,
		ServedRecord:  o.servedRecord,
		OwnCgroup:     own,
		ReadTimeout:   o.readTimeout,
		StateDir:      o.stateDir,
		Log:           log,
		Landlock:      map[string]execute.LandlockMode{"auto": execute.LandlockAuto, "off": execute.LandlockOff}[o.landlock],
	}
	if err := patchRunner(&cfg, o.patchUnits, log); err != nil {
		lns.close()
		return err
	}
	srv, err := broker.New(cfg)
	if err != nil {
		lns.close()
		return err
	}
	idle := time.Duration(0)
	if lns.activated {
		idle = o.idleExit
	}
	srv.SetIdleExit(idle)
	if len(lns.vsock) > 0 && len(srv.VsockGuests()) == 0 {
		log.Warn("serving vsock, but the policy's transport section allows no guest: every vsock connection will be refused")
	}
	log.Info("broker serving", "listeners", lns.addrs(), "socket_activated", lns.activated, "version", version)

	var wg sync.WaitGroup
	defer wg.Wait()
	loopCtx, cancelLoops := context.WithCancel(ctx)
	defer cancelLoops()
	wg.Add(4)
	go func() { defer wg.Done(); service.HeapProfileOnSignal(loopCtx, log, "broker") }()
	go func() { defer wg.Done(); service.WatchdogWhileAlive(loopCtx, log, srv.Alive) }()
	go func() { defer wg.Done(); reloadOnHangup(loopCtx, hup, srv) }()
	go func() { defer wg.Done(); service.ReleaseMemory(loopCtx, time.Second, time.Minute) }()

	service.Ready(log)
	// Each listener has its own connection budget: a guest cannot starve
	// the unix socket, nor the reverse.
	var limited []net.Listener
	for _, ln := range lns.all() {
		limited = append(limited, unixsock.LimitListener(ln, unixsock.DefaultLimits.MaxConnections))
	}
	err = srv.Serve(ctx, limited...)
	service.Stopping(log)
	return err
}

func ownCgroup(v string) (execute.OwnCgroup, error) {
	switch v {
	case "auto":
		return execute.OwnCgroupAuto, nil
	case "always":
		return execute.OwnCgroupAlways, nil
	case "never":
		return execute.OwnCgroupNever, nil
	}
	return 0, fmt.Errorf("--own-cgroup %q: want auto, always or never", v)
}

func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, srv *broker.Server) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = srv.Reload() // a failed reload keeps the old policy and is logged
		}
	}
}

// patchRunner gives the broker the patch runner (this binary) and, where
// systemd is PID 1, transient units for the runs.
func patchRunner(cfg *broker.Config, units string, log *slog.Logger) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the broker's own binary for patch runs: %w", err)
	}
	cfg.PatchRunner = []string{self, patch.RunnerCommand}
	switch units {
	case "never":
	case "auto":
		if patch.SystemdBooted() {
			cfg.PatchUnits = patch.NewUnits()
		}
	default:
		return fmt.Errorf("--patch-units %q: auto or never", units)
	}
	log.Info("patch runs", "transient_units", cfg.PatchUnits != nil, "runner", self)
	return nil
}
