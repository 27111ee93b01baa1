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
	"github.com/nannyai/nannyagent/worker/config"
	"github.com/nannyai/nannyagent/worker/localapi"
	"github.com/nannyai/nannyagent/worker/metrics"
	"github.com/nannyai/nannyagent/worker/proxmox"
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

	// own holds ids of investigations this worker created, so the realtime
	// stream's echo of them is not run a second time.
	ownMu sync.Mutex
	own   map[string]bool

	// The agent's loops run under runCtx once the host is registered.
	runMu      sync.Mutex
	runCtx     context.Context
	loops      sync.WaitGroup
	agentStart sync.Once
}

// New connects (lazily) to the broker and opens the token store.
func New(cfg *config.Config, version string, log *slog.Logger) (*Worker, error) {
	sess, err := newSession(cfg, version)
	if err != nil {
		return nil, err
	}
	conn, err := unixsock.Dial(cfg.BrokerSocket, unixsock.DefaultLimits.MaxSendMsgSize)
	if err != nil {
		sess.close()
		return nil, err
	}
	w := &Worker{
		cfg: cfg, log: log, version: version, started: time.Now(),
		brokerConn: conn, broker: brokerv1.NewBrokerServiceClient(conn), session: sess,
	}
	if err := w.newLoops(); err != nil {
		conn.Close()
		sess.close()
		return nil, err
	}
	return w, nil
}

// Run serves the CLI on ln until ctx ends, then stops everything it started.
// ready is called once the worker serves.
func (w *Worker) Run(ctx context.Context, ln net.Listener, ready func()) error {
	defer w.brokerConn.Close()
	defer w.session.close()
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

// startAgent starts the loops that need a registration, once, under Run's
// context.
func (w *Worker) startAgent() {
	w.agentStart.Do(func() {
		w.runMu.Lock()
		ctx := w.runCtx
		w.runMu.Unlock()
		if ctx == nil {
			return
		}
		for _, loop := range w.agentLoops() {
			w.loops.Add(1)
			go func() {
				defer w.loops.Done()
				loop(ctx)
			}()
		}
	})
}

// agentLoops are the loops of a registered agent.
func (w *Worker) agentLoops() []func(context.Context) {
	loops := []func(context.Context){
		func(ctx context.Context) { w.runLoop(ctx, "metrics", w.metrics.Run) },
		func(ctx context.Context) { w.runLoop(ctx, "proxmox", w.proxmox.Run) },
	}
	if !w.cfg.UseStaticToken() {
		loops = append(loops, func(ctx context.Context) { w.session.tokens.Run(ctx, w.cfg.TokenRenewal.CheckInterval) })
	}
	return loops
}

// runLoop runs one loop and logs why it ended early.
func (w *Worker) runLoop(ctx context.Context, name string, run func(context.Context) error) {
	if err := run(ctx); err != nil && ctx.Err() == nil {
		w.log.Error("loop stopped", "loop", name, "error", err.Error())
	}
}

// Listen takes systemd's socket when activated, or creates worker.sock: its
// directory 0755 and the socket 0660, group-owned by the admin group when the
// worker may set that group.
func Listen(ctx context.Context, cfg *config.Config, log *slog.Logger) (net.Listener, error) {
	ln, err := unixsock.Activated()
	if err != nil || ln != nil {
		return ln, err
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

// ownInvestigation records an investigation this worker created.
func (w *Worker) ownInvestigation(id string) {
	w.ownMu.Lock()
	defer w.ownMu.Unlock()
	if w.own == nil {
		w.own = map[string]bool{}
	}
	w.own[id] = true
}

func (w *Worker) now() time.Time { return time.Now() }
