// Package worker assembles the unprivileged worker: it connects to the
// broker, serves the CLI on worker.sock, holds the host's registration with
// NannyAPI and runs the agent's loops until its context ends. Every
// goroutine it starts stops before Run returns.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
	"github.com/nannyai/nannyagent/worker/config"
	"github.com/nannyai/nannyagent/worker/localapi"
	"github.com/nannyai/nannyagent/worker/metrics"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/proxmox"
	"github.com/nannyai/nannyagent/worker/realtime"
	"github.com/nannyai/nannyagent/worker/rebooting"
)

// Worker is one running worker process.
type Worker struct {
	cfg     *config.Config
	log     *slog.Logger
	version string
	started time.Time

	brokerConn *grpc.ClientConn
	broker     brokerv1.BrokerServiceClient
	session    *session
	health     successes
	metrics    *metrics.Loop
	proxmox    *proxmox.Loop
	// hold keeps metrics heartbeats paused while a reboot is in the
	// backend's hands (it survives restarts in the state directory).
	hold *rebooting.Hold

	// ops records handled operations (exactly once across restarts).
	ops *opstate.Store
	// recent remembers this process's investigations for status.
	recent recentInvestigations

	// The agent's loops run under runCtx once the host is registered; a
	// forced re-registration restarts them for the new agent id.
	runMu       sync.Mutex
	runCtx      context.Context
	loops       sync.WaitGroup
	agent       *agentRun
	realtimeNow *realtime.Realtime
}

// agentRun is one start of the agent's loops.
type agentRun struct {
	agentID string
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

// New connects (lazily) to the broker and opens the token store.
func New(cfg *config.Config, version string, log *slog.Logger) (*Worker, error) {
	return newWorker(cfg, version, log, vsocknet.Dial)
}

// newWorker is New with the way a vsock broker is reached: tests put a
// listener in its place, since no test may dial a context id.
func newWorker(cfg *config.Config, version string, log *slog.Logger, vsockDial vsocknet.DialFunc) (*Worker, error) {
	sess, err := newSession(cfg, version)
	if err != nil {
		return nil, err
	}
	conn, err := dialBroker(cfg, vsockDial)
	if err != nil {
		sess.close()
		return nil, err
	}
	ops, err := opstate.Open(opstate.Options{Dir: cfg.StateDir})
	if err != nil {
		conn.Close()
		sess.close()
		return nil, &config.Error{Key: "state_dir", Reason: err.Error()}
	}
	w := &Worker{
		cfg: cfg, log: log, version: version, started: time.Now(),
		brokerConn: conn, broker: brokerv1.NewBrokerServiceClient(conn), session: sess, ops: ops,
	}
	if err := w.newLoops(); err != nil {
		w.close()
		return nil, err
	}
	// Before any loop runs: a hold left by a previous process pauses the
	// first heartbeat too.
	if err := w.newHold(); err != nil {
		w.close()
		return nil, &config.Error{Key: "state_dir", Reason: err.Error()}
	}
	return w, nil
}

func (w *Worker) close() {
	w.brokerConn.Close()
	w.session.close()
	if err := w.ops.Close(); err != nil {
		w.log.Error("closing the operations record", "error", err.Error())
	}
}

// Run serves the CLI on ln until ctx ends, then stops everything it started.
// ready is called once the worker serves.
func (w *Worker) Run(ctx context.Context, ln net.Listener, ready func()) error {
	defer w.close()
	if err := w.ops.Degraded(); err != nil {
		w.log.Error("the record of handled operations was corrupt and is kept aside; patches in apply mode and reboots are refused until an operator removes it", "error", err.Error())
	}
	for _, warning := range w.cfg.Warnings {
		w.log.Warn(warning)
	}
	if warning := w.session.api.Warning(); warning != "" {
		w.log.Warn(warning)
	}
	api := localapi.New(localapi.Config{
		AdminGroup: w.cfg.AdminGroup,
		Status:     w,
		Register:   w,
		Diagnose:   w,
		Limits:     unixsock.DefaultLimits,
		Log:        w.log,
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.runMu.Lock()
	w.runCtx = ctx
	w.runMu.Unlock()
	defer w.loops.Wait()

	errc := make(chan error, 1)
	w.loops.Add(1)
	go func() {
		defer w.loops.Done()
		if err := api.Serve(ctx, unixsock.LimitListener(ln, unixsock.DefaultLimits.MaxConnections)); err != nil {
			errc <- fmt.Errorf("local API: %w", err)
			cancel()
		}
	}()
	if w.session.registered() {
		w.startAgent()
	} else {
		w.log.Warn("this host is not registered: run `nannyagent register` as root")
	}
	ready()
	w.log.Info("worker serving", "socket", ln.Addr().String(), "broker_socket", w.cfg.BrokerSocket, "version", w.version)
	<-ctx.Done()
	w.loops.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// startAgent starts the loops that need a registration under Run's
// context, or restarts them when the agent id changed.
func (w *Worker) startAgent() {
	w.runMu.Lock()
	defer w.runMu.Unlock()
	if w.runCtx == nil || w.runCtx.Err() != nil {
		return
	}
	id := w.session.agentID()
	if w.agent != nil {
		if w.agent.agentID == id {
			return
		}
		w.agent.cancel()
		w.agent.done.Wait()
	}
	ctx, cancel := context.WithCancel(w.runCtx)
	run := &agentRun{agentID: id, cancel: cancel}
	loops, rt := w.agentLoops(ctx, id)
	w.agent, w.realtimeNow = run, rt
	for _, loop := range loops {
		run.done.Add(1)
		w.loops.Add(1)
		go func() {
			defer w.loops.Done()
			defer run.done.Done()
			loop(ctx)
		}()
	}
}

// agentLoops are the loops of a registered agent; ctx is their lifetime.
func (w *Worker) agentLoops(ctx context.Context, agentID string) ([]func(context.Context), *realtime.Realtime) {
	loops := []func(context.Context){
		func(ctx context.Context) { w.runLoop(ctx, "metrics", w.metrics.Run) },
		func(ctx context.Context) { w.runLoop(ctx, "proxmox", w.proxmox.Run) },
		func(ctx context.Context) { w.runLoop(ctx, "reboot hold", w.hold.Run) },
	}
	if !w.cfg.UseStaticToken() {
		loops = append(loops, func(ctx context.Context) { w.session.tokens.Run(ctx, w.cfg.TokenRenewal.CheckInterval) })
	}
	rt, err := w.newRealtime(ctx, agentID)
	if err != nil {
		w.log.Error("realtime disabled", "error", err.Error())
		return loops, nil
	}
	return append(loops, func(ctx context.Context) { w.runLoop(ctx, "realtime", rt.Run) }), rt
}

// runLoop runs one loop and logs why it ended early.
func (w *Worker) runLoop(ctx context.Context, name string, run func(context.Context) error) {
	if err := run(ctx); err != nil && ctx.Err() == nil {
		w.log.Error("loop stopped", "loop", name, "error", err.Error())
	}
}

// SocketName is worker.sock's name in socket activation: the socket unit's
// FileDescriptorName=.
const SocketName = "worker"

// Listen takes systemd's socket when activated, or creates worker.sock: its
// directory 0755 and the socket 0660, group-owned by the admin group when the
// worker may set that group.
func Listen(ctx context.Context, cfg *config.Config, log *slog.Logger) (net.Listener, error) {
	passed := unixsock.Passed()
	ln, err := passed.Unix(SocketName)
	if err == nil {
		err = passed.Close()
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, err
	}
	if ln != nil {
		if addr := ln.Addr().String(); addr != cfg.WorkerSocket {
			// The CLI finds the worker through worker_socket.
			log.Warn("the socket systemd passed is not worker_socket; the CLI will not find it", "socket", addr, "worker_socket", cfg.WorkerSocket)
		}
		return ln, nil
	}
	gid := adminGID(cfg.AdminGroup, log)
	return unixsock.Listen(ctx, unixsock.ListenConfig{Path: cfg.WorkerSocket, DirMode: 0o755, SocketMode: 0o660, GID: gid})
}

// adminGID is the admin group's gid when this process may give the socket
// to it (root, or a member of the group), else -1: the socket then keeps the
// worker's group and only root can use the CLI.
func adminGID(name string, log *slog.Logger) int {
	g, err := user.LookupGroup(name)
	if err != nil {
		log.Warn("admin group not found; only root can use the CLI", "group", name, "error", err.Error())
		return -1
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1
	}
	if os.Geteuid() == 0 || os.Getegid() == gid {
		return gid
	}
	groups, _ := os.Getgroups()
	if slices.Contains(groups, gid) {
		return gid
	}
	log.Warn("the worker is not in the admin group; only root can use the CLI", "group", name)
	return -1
}
