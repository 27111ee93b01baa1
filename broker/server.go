package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/user"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/broker/metrics"
	"github.com/nannyai/nannyagent/broker/probe"
	"github.com/nannyai/nannyagent/broker/reboot"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/peercred"
	"github.com/nannyai/nannyagent/ipc/unixsock"
)

// Config is everything the broker needs to serve.
type Config struct {
	// Version is the broker's build version.
	Version string
	// WorkerUser is the account the worker runs as; it is resolved by name
	// at every accept, so a re-created account is followed.
	WorkerUser string
	// LoadPolicy loads the policy at start and on Reload.
	LoadPolicy PolicyLoader
	// Probe configures host detection.
	Probe probe.Config
	// Metrics configures where CollectMetrics reads (the host by default).
	Metrics metrics.Config
	// Limits are the gRPC server limits.
	Limits unixsock.Limits
	// IdleExit ends Serve after this long without a request; 0 never does.
	IdleExit time.Duration
	// GracePeriod bounds how long Serve waits for requests in flight at stop.
	GracePeriod time.Duration
	// StateDir is the broker's own state directory (DefaultStateDir when
	// empty): 0700, the broker's account only, never the worker's.
	StateDir string
	// Patches reports a patch run in progress (reboots wait for it); by
	// default the patch runs recorded in StateDir.
	Patches reboot.PatchActivity
	// Uptime overrides how long the host has been up (tests).
	Uptime func() (time.Duration, error)
	// Log receives the decision log and operational messages.
	Log *slog.Logger
}

// Server is the broker's gRPC service.
type Server struct {
	brokerv1.UnimplementedBrokerServiceServer

	cfg      Config
	table    map[string]request
	log      *slog.Logger
	policies *policyStore
	prober   *probe.Prober
	metrics  *metrics.Collector
	runner   *execute.Runner
	rebooter *reboot.Rebooter
	dlog     decisionLog
	idle     idleTracker
	grpc     *grpc.Server
}

// New loads the policy and builds the server. It fails if the policy does.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = 10 * time.Second
	}
	policies, err := newPolicyStore(cfg.LoadPolicy, cfg.Log)
	if err != nil {
		return nil, err
	}
	lim := policies.current().policy.Limits()
	runner, err := execute.New(execute.Config{MaxConcurrent: lim.ConcurrentCommands, Logger: cfg.Log})
	if err != nil {
		return nil, fmt.Errorf("command runner: %w", err)
	}
	rebooter, err := newRebooter(cfg, runner)
	if err != nil {
		_ = runner.Close()
		return nil, err
	}
	s := &Server{
		cfg: cfg, table: requestTable, log: cfg.Log, policies: policies,
		prober: probe.New(cfg.Probe), metrics: metrics.New(cfg.Metrics), runner: runner, rebooter: rebooter,
	}
	s.dlog = decisionLog{log: cfg.Log, policy: policies.sha256}
	creds := peercred.NewServerCredentials(s.authorize, s.dlog.refusedConnection, cfg.Log)
	s.grpc = grpc.NewServer(unixsock.ServerOptions(creds, cfg.Limits,
		grpc.ChainUnaryInterceptor(s.intercept),
		grpc.ChainStreamInterceptor(refuseStreams),
	)...)
	brokerv1.RegisterBrokerServiceServer(s.grpc, s)
	return s, nil
}

func newRebooter(cfg Config, runner *execute.Runner) (*reboot.Rebooter, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.Patches == nil {
		cfg.Patches = newPatchStateDir(cfg.StateDir)
	}
	r, err := reboot.New(reboot.Config{StateDir: cfg.StateDir, Patches: cfg.Patches, Launcher: runner, Uptime: cfg.Uptime})
	if err != nil {
		return nil, err
	}
	if err := r.StateError(); err != nil {
		cfg.Log.Error("the broker's state directory cannot be trusted: host reboots are refused", "state_dir", cfg.StateDir, "error", err.Error())
	}
	return r, nil
}

// authorize serves root and the worker account, nobody else.
func (s *Server) authorize(p peercred.Peer) error {
	if p.UID == 0 {
		return nil
	}
	u, err := user.Lookup(s.cfg.WorkerUser)
	if err != nil {
		return fmt.Errorf("worker account %q cannot be resolved: %w", s.cfg.WorkerUser, err)
	}
	if u.Uid == strconv.FormatUint(uint64(p.UID), 10) {
		return nil
	}
	return fmt.Errorf("uid %d is neither root nor the worker account %q", p.UID, s.cfg.WorkerUser)
}

// Close releases what New set up (the command runner and its cgroups). Serve
// calls it when it returns; call it yourself when Serve never runs.
func (s *Server) Close() error { return s.runner.Close() }

// SetIdleExit sets how long Serve waits without requests before it returns;
// zero never returns for idleness. Call it before Serve.
func (s *Server) SetIdleExit(d time.Duration) { s.cfg.IdleExit = d }

// Reload re-reads the policy files; on failure the old policy stays.
func (s *Server) Reload() error { return s.policies.reload() }

// Serve answers requests on ln until ctx ends or the broker has been idle
// for Config.IdleExit. It returns nil on a clean stop.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waitProbe := s.prober.Start(ctx)
	defer waitProbe()

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.grpc.Serve(ln) }()

	var wg sync.WaitGroup
	idleTimeout := make(chan struct{})
	if s.cfg.IdleExit > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.idle.waitIdle(ctx, s.cfg.IdleExit) {
				close(idleTimeout)
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case <-idleTimeout:
		s.log.Info("idle, exiting", "idle_exit", s.cfg.IdleExit.String())
	case err = <-serveErr:
	}
	cancel()
	s.stop()
	wg.Wait()
	if cerr := s.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// stop drains requests in flight for the grace period, then cuts them off.
func (s *Server) stop() {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(s.cfg.GracePeriod):
		s.grpc.Stop()
		<-done
	}
}

// intercept dispatches from the request table, tracks idleness, recovers a
// handler panic into an error, and writes the decision log.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	p, _ := peercred.FromContext(ctx)
	entry, ok := s.table[info.FullMethod]
	if !ok {
		a := &audit{decision: decisionDeny, reason: "request type not in the broker's table"}
		s.dlog.request(p, info.FullMethod, a, 0, nil)
		return nil, status.Error(codes.PermissionDenied, "request type not permitted")
	}
	s.idle.begin()
	defer s.idle.end()
	ctx, a := withAudit(ctx)
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("handler panic", "rpc", entry.name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
		s.dlog.request(p, entry.name, a, time.Since(start), err)
	}()
	return handler(ctx, req)
}

// refuseStreams refuses every streaming call: the broker's API has none.
func refuseStreams(_ any, _ grpc.ServerStream, info *grpc.StreamServerInfo, _ grpc.StreamHandler) error {
	return status.Errorf(codes.PermissionDenied, "streaming request %s not permitted", info.FullMethod)
}

// probeWait bounds how long Probe waits for the slow checks of a broker
// that has just started.
const probeWait = 15 * time.Second

// Probe reports the host's facts and the policy in force.
func (s *Server) Probe(ctx context.Context, _ *brokerv1.ProbeRequest) (*brokerv1.ProbeResponse, error) {
	pctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	resp := s.prober.Probe(pctx)
	lp := s.policies.current()
	resp.BrokerVersion = s.cfg.Version
	resp.Policy = lp.info
	resp.Cgroups = s.runner.Info().Proto()
	// This host is a Proxmox VE node when pmxcfs names it as the local node.
	if node, err := lp.caps.proxmox.Detect(); err == nil {
		resp.Proxmox.Detected, resp.Proxmox.Node = true, node
	}
	return resp, nil
}

func policyInfo(lp *loadedPolicy) *brokerv1.PolicyInfo {
	p := lp.policy
	info := &brokerv1.PolicyInfo{
		Sha256:           p.SHA256(),
		RuleCounts:       map[string]int32{},
		LoadedAt:         timestamppb.New(lp.loadedAt),
		DisabledRules:    p.DisabledRules(),
		RawTracesAllowed: p.Traces().AllowRawPrograms,
		PatchesEnabled:   p.Patches().Enabled,
		RebootsEnabled:   p.Reboots().Enabled,
	}
	for _, f := range p.Files() {
		info.Files = append(info.Files, &brokerv1.PolicyFile{Path: f.Path, Sha256: f.SHA256, Origin: string(f.Origin)})
	}
	for section, n := range p.RuleCounts() {
		info.RuleCounts[section] = int32(n)
	}
	return info
}
