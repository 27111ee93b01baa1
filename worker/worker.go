// Package worker assembles the unprivileged worker: it connects to the
// broker, serves the CLI on worker.sock and runs the worker's loops until its
// context ends. Every goroutine it starts stops before Run returns.
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
)

// Worker is one running worker process.
type Worker struct {
	cfg     *config.Config
	log     *slog.Logger
	version string
	started time.Time

	brokerConn *grpc.ClientConn
	broker     brokerv1.BrokerServiceClient
}

// New connects (lazily) to the broker.
func New(cfg *config.Config, version string, log *slog.Logger) (*Worker, error) {
	conn, err := unixsock.Dial(cfg.BrokerSocket, unixsock.DefaultLimits.MaxSendMsgSize)
	if err != nil {
		return nil, err
	}
	return &Worker{
		cfg: cfg, log: log, version: version, started: time.Now(),
		brokerConn: conn, broker: brokerv1.NewBrokerServiceClient(conn),
	}, nil
}

// Run serves the CLI on ln until ctx ends, then stops everything it started.
// ready is called once the worker serves.
func (w *Worker) Run(ctx context.Context, ln net.Listener, ready func()) error {
	defer w.brokerConn.Close()
	for _, warning := range w.cfg.Warnings {
		w.log.Warn(warning)
	}
	api := localapi.New(localapi.Config{
		AdminGroup: w.cfg.AdminGroup,
		Status:     w,
		Limits:     unixsock.DefaultLimits,
		Log:        w.log,
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := api.Serve(ctx, unixsock.LimitListener(ln, unixsock.DefaultLimits.MaxConnections)); err != nil {
			errc <- fmt.Errorf("local API: %w", err)
			cancel()
		}
	}()
	ready()
	w.log.Info("worker serving", "socket", ln.Addr().String(), "broker_socket", w.cfg.BrokerSocket, "version", w.version)
	<-ctx.Done()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
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
