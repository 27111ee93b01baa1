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
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/broker/metrics"
	"github.com/nannyai/nannyagent/broker/patch"
	"github.com/nannyai/nannyagent/broker/probe"
	"github.com/nannyai/nannyagent/broker/reboot"
	"github.com/nannyai/nannyagent/broker/trace"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/lastserved"
	"github.com/nannyai/nannyagent/ipc/peerauth"
	"github.com/nannyai/nannyagent/ipc/peercred"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/policy"
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
	// Probe configures host detection. Without a Runner, the probe's
	// checks run through the broker's launcher.
	Probe probe.Config
	// Metrics configures where CollectMetrics reads (the host by default).
	Metrics metrics.Config
	// Limits are the gRPC server limits. The receive limit is not taken
	// from here: it is the policy's request_bytes, read at start.
	Limits unixsock.Limits
	// VsockIdentity is the broker's key for vsock peers (nil: every vsock
	// connection is refused). See transport.go.
	VsockIdentity *keypin.Identity
	// ServedRecord is where the record of when each peer was last served
	// is kept ("" keeps it in memory); ServedRecordEvery is how often it is
	// written when it changed (30 s if zero).
	ServedRecord      string
	ServedRecordEvery time.Duration
	// ReadTimeout bounds the time from a request's headers to its whole
	// message (default 10 s).
	ReadTimeout time.Duration
	// OwnCgroup says whether the broker moves into a leaf cgroup of its
	// own, where its memory ceiling is set (see execute.OwnCgroup).
	OwnCgroup execute.OwnCgroup
	// IdleExit ends Serve after this long without a request; 0 never does.
	IdleExit time.Duration
	// GracePeriod bounds how long Serve waits for requests in flight at stop.
	GracePeriod time.Duration
	// StateDir is the broker's own state directory (root-only; never the
	// worker's): patch runs and their results, the last host reboot.
	// Empty: patch runs are unavailable and host reboots are refused.
	StateDir string
	// PatchRunner is the command line of the patch runner (this binary
	// and patch.RunnerCommand); runs in containers and in units need it.
	PatchRunner []string
	// PatchUnits, when set, starts every patch run in a transient
	// systemd unit of its own (systemd is PID 1), which outlives the
	// broker.
	PatchUnits patch.UnitLauncher
	// Log receives the decision log and operational messages.
	Log *slog.Logger
	// Landlock says whether runs are confined (auto) or not (off, a test
	// switch: the policy's option tables must hold on their own).
	Landlock execute.LandlockMode
}

// Server is the broker's gRPC service. It implements every RPC of
// brokerv1.BrokerServiceServer itself: it embeds the Unsafe interface,
// not the Unimplemented struct, so an RPC without a handler does not
// compile, and none answers "not implemented".
type Server struct {
	brokerv1.UnsafeBrokerServiceServer

	cfg        Config
	table      []request
	log        *slog.Logger
	policies   *policyStore
	prober     *probe.Prober
	probing    lazyProbe
	metrics    *metrics.Collector
	runner     *execute.Runner
	rebooter   *reboot.Rebooter
	traceSlots *trace.Slots
	readSlots  readSlotsSem
	// patches runs patch scripts; nil (with patchErr saying why) when
	// the state directory is unusable.
	patches  *patch.Manager
	patchErr string
	dlog     decisionLog
	idle     idleTracker
	grpc     *grpc.Server
	// addr is the unix socket Serve answers on, for Alive.
	addr atomic.Pointer[string]
	// servedRecord says when each peer was last served (transport.go).
	servedRecord *lastserved.Tracker
}

var _ brokerv1.BrokerServiceServer = (*Server)(nil)

// New loads the policy and builds the server. It fails if the policy does.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = 10 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = defaultReadTimeout
	}
	runner, err := execute.New(execute.Config{Logger: cfg.Log, OwnCgroup: cfg.OwnCgroup, Landlock: cfg.Landlock})
	if err != nil {
		return nil, fmt.Errorf("command runner: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Log, runner: runner, traceSlots: trace.NewSlots(0), metrics: metrics.New(cfg.Metrics)}
	s.table = s.requestTable()
	s.idle.busy = func() bool { return runner.DetachedRuns() > 0 }
	s.policies, err = newPolicyStore(cfg.LoadPolicy, s.capabilitiesFor, cfg.Log)
	if err != nil {
		_ = runner.Close()
		return nil, err
	}
	lim := s.policies.current().policy.Limits()
	s.applyLimits(lim)
	if cfg.Probe.Runner == nil {
		cfg.Probe.Runner = s.probeRunner
	}
	s.prober = probe.New(cfg.Probe)
	s.patches, s.patchErr = s.newPatches()
	if s.rebooter, err = s.newRebooter(); err != nil {
		_ = s.Close()
		return nil, err
	}
	s.dlog = decisionLog{log: cfg.Log, policy: s.policies.sha256}
	s.newServedRecord()
	s.readSlots = make(readSlotsSem, readSlots)
	tl := cfg.Limits
	// request_bytes applies here, at start: gRPC cannot change a
	// server's receive limit later.
	tl.MaxRecvMsgSize = int(lim.RequestBytes)
	// One credential, codec, admission tap and call log for every
	// listener, unix and vsock alike.
	s.grpc = grpc.NewServer(unixsock.ServerOptions(s.transportCredentials(), tl,
		grpc.ForceServerCodecV2(newCodec()),
		grpc.InTapHandle(s.tap),
		grpc.StatsHandler(callLog{s}),
		grpc.UnknownServiceHandler(s.unknownMethod),
	)...)
	s.grpc.RegisterService(s.serviceDesc(), s)
	return s, nil
}

// applyLimits puts the policy's limits where something enforces them
// outside a request: the number of commands at once and the broker's own
// memory ceiling.
func (s *Server) applyLimits(lim policy.Limits) {
	s.runner.SetMaxConcurrent(lim.ConcurrentCommands)
	ceiling := MemoryCeiling(lim)
	debug.SetMemoryLimit(ceiling)
	hard := ceiling + ceiling/4
	err := s.runner.SetOwnMemoryLimit(hard)
	switch {
	case err == nil:
		s.log.Info("memory ceiling", "go_memory_limit", ceiling, "cgroup_memory_max", hard, "cgroup", s.runner.Info().OwnCgroup)
	case errors.Is(err, execute.ErrNoOwnCgroup):
		s.log.Info("memory ceiling", "go_memory_limit", ceiling, "cgroup_memory_max", "none: no cgroup of its own")
	default:
		s.log.Warn("memory ceiling: the cgroup limit was not set", "go_memory_limit", ceiling, "error", err.Error())
	}
}

// probeRunner runs the probe's fixed checks (bpftrace --version, the
// attach test, pveversion) through the launcher, under the policy's child
// limits, like every child of the broker.
func (s *Server) probeRunner(ctx context.Context, argv []string) ([]byte, int, error) {
	lim := s.policies.current().policy.Limits()
	out, exit, err := s.runner.Output(ctx, execute.Spec{Path: argv[0], Argv: argv,
		Limits: execute.Limits{Timeout: lim.CommandTimeout, ChildMemory: lim.ChildMemory, ChildTasks: lim.ChildTasks}}, probeOutputBytes)
	if err != nil {
		return out, -1, err
	}
	return out, exit.Code, nil
}

// probeOutputBytes bounds what the probe keeps of one check's output.
const probeOutputBytes = 64 << 10

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

// Close releases what New set up (a patch run in progress is stopped and
// recorded interrupted; the command runner and its cgroups). Serve calls
// it when it returns; call it yourself when Serve never runs.
func (s *Server) Close() error {
	var errs []error
	if s.patches != nil {
		errs = append(errs, s.patches.Close())
	}
	return errors.Join(append(errs, s.runner.Close())...)
}

// newPatches opens the patch runs' state directory. Without one the
// broker still serves everything else, and RunPatch says why it cannot.
func (s *Server) newPatches() (*patch.Manager, string) {
	if s.cfg.StateDir == "" {
		return nil, "patch runs are unavailable: the broker has no state directory (--state-dir)"
	}
	m, err := patch.New(patch.Config{
		StateDir: s.cfg.StateDir, Launcher: detachedLauncher{s.runner}, Log: s.log,
		Runner: s.cfg.PatchRunner, Units: s.cfg.PatchUnits,
		// The broker stays up while a run goes on (no idle exit).
		Hold: func() func() { s.idle.begin(); return s.idle.end },
	})
	if err != nil {
		s.log.Error("patch runs unavailable", "state_dir", s.cfg.StateDir, "error", err.Error())
		return nil, "patch runs are unavailable: " + err.Error()
	}
	return m, ""
}

// newRebooter sets up reboots on the same state directory as the patch
// runs; a patch run in progress holds reboots back.
func (s *Server) newRebooter() (*reboot.Rebooter, error) {
	r, err := reboot.New(reboot.Config{StateDir: s.cfg.StateDir, Patches: patchActivity{s}, Launcher: s.runner})
	if err != nil {
		return nil, err
	}
	if err := r.StateError(); err != nil {
		s.log.Error("host reboots are refused: the broker's state directory cannot be used", "state_dir", s.cfg.StateDir, "error", err.Error())
	}
	return r, nil
}

// patchActivity tells reboots whether a patch run is in progress.
type patchActivity struct{ s *Server }

// Running reports a patch run in progress. Without a patch manager (no
// usable state directory) no run can have been started by this broker.
func (p patchActivity) Running() bool {
	return p.s.patches != nil && p.s.patches.Active() != ""
}

// SetIdleExit sets how long Serve waits without requests before it returns;
// zero never returns for idleness. Call it before Serve.
func (s *Server) SetIdleExit(d time.Duration) { s.cfg.IdleExit = d }

// Reload re-reads the policy files; on failure the old policy stays. The
// new limits apply at once, except request_bytes (see New).
func (s *Server) Reload() error {
	if err := s.policies.reload(); err != nil {
		return err
	}
	s.applyLimits(s.policies.current().policy.Limits())
	return nil
}

// Serve answers requests on every listener (unix, vsock, or both, with one
// gRPC server) until ctx ends or the broker has been idle for
// Config.IdleExit. It returns nil on a clean stop.
func (s *Server) Serve(ctx context.Context, lns ...net.Listener) error {
	if len(lns) == 0 {
		_ = s.Close()
		return errors.New("serve: no listener")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.probing.serve(ctx)
	defer s.probing.stop()

	addr := unixAddr(lns)
	s.addr.Store(&addr)
	var wg sync.WaitGroup
	serveErr := s.serveAll(lns, &wg)
	// The record outlives the drain below, so the last requests are in it.
	recordCtx, stopRecord := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRecord()
	s.keepServedRecord(recordCtx, &wg)
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
	stopRecord()
	wg.Wait()
	if cerr := s.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Alive makes one real round trip through the broker's own unix socket,
// as a client would: connect (accept, the peer check), then a Probe
// (admission, dispatch, the handler, the reply). The watchdog pings
// systemd only after it succeeds. The call is logged like any other; it
// does not count as activity for the idle exit. It always dials the unix
// socket, also when vsock listeners are served beside it: the host cannot
// connect to its own vsock port, and a vsock peer must prove a guest's
// key. A broker serving vsock alone has no round trip to make.
func (s *Server) Alive(ctx context.Context) error {
	addr := s.addr.Load()
	switch {
	case addr == nil:
		return errors.New("not serving yet")
	case *addr == "":
		return errors.New("no unix socket served: the liveness round trip needs one")
	}
	conn, err := unixsock.Dial(*addr, unixsock.DefaultLimits.MaxSendMsgSize)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := brokerv1.NewBrokerServiceClient(conn).Probe(ctx, &brokerv1.ProbeRequest{}); err != nil {
		return fmt.Errorf("probe over %s: %w", *addr, err)
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

// serve runs one request from the table: it reads and measures the
// message (inbound), returns its share of the read budget, refuses what
// the limits do not admit or hands it to the handler, recovers a handler
// panic into an error, tracks idleness and writes the decision log.
func (s *Server) serve(ctx context.Context, e request, dec func(any) error) (resp any, err error) {
	if c := callFrom(ctx); c != nil {
		c.logged.Store(true)
	}
	p, _ := peerauth.FromContext(ctx)
	// The broker's own liveness round trips (Alive) are not activity.
	if !ownRoundTrip(p) {
		s.idle.begin()
		defer s.idle.end()
	}
	lp := s.policies.current()
	ctx, a := withAudit(ctx, lp)
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("handler panic", "rpc", e.name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
			a.decision = decisionError
		}
		s.dlog.request(p, e.name, a, time.Since(start), err)
		if !ownRoundTrip(p) {
			s.served(p, e.name)
		}
	}()
	if err := s.readSlots.acquire(ctx); err != nil {
		a.decision, a.reason = decisionDeny, "not read: waited for a read slot: "+err.Error()
		return nil, status.Error(codes.ResourceExhausted, a.reason)
	}
	in := &inbound{rpc: e.name, shape: e.shape, limits: lp.policy.Limits(), msg: e.newMsg()}
	derr := dec(in)
	s.readSlots.release()
	read(ctx)
	switch {
	case derr != nil:
		// Too large for request_bytes, malformed, or cut off: refused
		// before anything was decoded.
		a.decision, a.reason = decisionDeny, status.Convert(derr).Message()
		if cause := context.Cause(ctx); errors.Is(cause, errReadTimeout) {
			a.reason = "not read: " + cause.Error()
		}
		return nil, derr
	case in.refused != "":
		a.decision, a.reason = decisionDeny, in.refused
		return e.refuse(in.refused)
	}
	return e.handle(ctx, in.msg)
}

// probeWait bounds how long Probe waits for the slow checks of a broker
// that has just started.
const probeWait = 15 * time.Second

// Probe reports the host's facts and the policy in force.
func (s *Server) Probe(ctx context.Context, _ *brokerv1.ProbeRequest) (*brokerv1.ProbeResponse, error) {
	pctx, cancel := context.WithTimeout(ctx, probeWait)
	defer cancel()
	s.probing.start(s.prober)
	resp := s.prober.Probe(pctx)
	lp := policyOf(ctx, s)
	resp.BrokerVersion = s.cfg.Version
	resp.Policy = lp.info
	info := s.runner.Info()
	resp.Cgroups = info.Proto()
	resp.Confinement = info.Confinement.Proto()
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
